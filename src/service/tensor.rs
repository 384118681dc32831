//! Wire tensors to typed, validated views: shape checks with overflow
//! checks, dtype and encoding, and raw little-endian bytes read in place.

use super::buffers::Pool;
use super::error::Error;
use super::reuse::Reused;
use crate::kernel::Element;
use crate::proto::v1::Tensor;
use bytes::Bytes;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
}

impl Dtype {
    /// The name used in messages and logs.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

/// How a tensor's values travel: typed repeated fields or raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Typed,
    Raw,
}

/// The values of a tensor: a vector decoded from typed fields, a copy from
/// the pool, or the raw bytes of the request itself, viewed in place when
/// they are aligned and copied a block at a time into a small scratch
/// buffer when they are not.
#[derive(Debug)]
enum Buf<F: Wire> {
    /// Decoded from typed fields into a fresh allocation, and freed when
    /// done: the next call's decode then reuses those still-cached bytes.
    /// Given to the pool instead, each typed call would hand back two
    /// buffers (this and its answer) for the one it takes, and the
    /// overflow the pool drops, its oldest and coldest, is what the
    /// allocator would hand the next decode.
    Decoded(Vec<F>),
    /// Taken from the pool, and given back to it.
    Pooled(Vec<F>),
    Shared(Bytes),
    Unaligned(Bytes),
    /// Taken by [`Input::take_reused`] to hold the results.
    Moved,
}

impl<F: Wire> Drop for Buf<F> {
    fn drop(&mut self) {
        if let Buf::Pooled(v) = self {
            F::pool().give(std::mem::take(v));
        }
    }
}

/// A decoded tensor of element type `F`, viewed as `[rows, k]`.
#[derive(Debug)]
pub struct Input<F: Wire> {
    /// The request field it came from, for messages.
    pub field: &'static str,
    /// The shape as sent.
    pub dims: Vec<usize>,
    /// Number of vectors (product of the batch dims).
    pub rows: usize,
    /// Length of each vector (the last dim).
    pub k: usize,
    /// The encoding it was sent in.
    pub encoding: Encoding,
    buf: Buf<F>,
}

impl<F: Wire> Input<F> {
    /// The values, row-major, `rows * k` of them; unaligned raw values must
    /// be made [`contiguous`](Self::contiguous) first.
    pub fn values(&self) -> Result<&[F], Error> {
        match &self.buf {
            Buf::Decoded(v) | Buf::Pooled(v) => Ok(v),
            Buf::Shared(b) => cast(b),
            Buf::Unaligned(_) => Err(Error::Internal(format!(
                "{}: unaligned values read without a copy",
                self.field
            ))),
            Buf::Moved => Err(self.moved()),
        }
    }

    /// The values of `rows`, in place when possible, else copied into
    /// `scratch`: a block that stays in cache for the kernel, instead of a
    /// second copy of the whole tensor.
    pub fn block<'a>(
        &'a self,
        rows: std::ops::Range<usize>,
        scratch: &'a mut Vec<F>,
    ) -> Result<&'a [F], Error> {
        let span = rows.start * self.k..rows.end * self.k;
        let missing = || Error::Internal(format!("{}: rows {rows:?} out of range", self.field));
        match &self.buf {
            Buf::Decoded(v) | Buf::Pooled(v) => v.get(span).ok_or_else(missing),
            Buf::Shared(b) => cast(b)?.get(span).ok_or_else(missing),
            Buf::Unaligned(b) => {
                let width = std::mem::size_of::<F>();
                let bytes = b
                    .get(span.start * width..span.end * width)
                    .ok_or_else(missing)?;
                fill_le(bytes, scratch);
                Ok(scratch)
            }
            Buf::Moved => Err(self.moved()),
        }
    }

    /// What reading the values after [`Self::take_reused`] is.
    fn moved(&self) -> Error {
        Error::Internal(format!(
            "{}: values read after their buffer was taken for the results",
            self.field
        ))
    }

    /// The same tensor with its values in one slice (copies unaligned raw
    /// values once, into a recycled buffer).
    pub fn contiguous(mut self) -> Self {
        if let Buf::Unaligned(raw) = &self.buf {
            let mut out = F::pool().take(raw.len() / std::mem::size_of::<F>());
            copy_le(raw, &mut out);
            self.buf = Buf::Pooled(out);
        }
        self
    }

    /// The raw request bytes, taken to write the results over (see
    /// [`Reused`]) when nothing else holds them; the input then holds no
    /// values.
    pub(super) fn take_reused(&mut self) -> Option<Reused<F>> {
        let (Buf::Shared(raw) | Buf::Unaligned(raw)) = &mut self.buf else {
            return None;
        };
        match Reused::take(std::mem::take(raw)) {
            Ok(reused) => {
                self.buf = Buf::Moved;
                Some(reused)
            }
            Err(back) => {
                *raw = back;
                None
            }
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.rows * self.k
    }

    /// True when the tensor holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The batch dims, as they go back on the wire.
    pub fn batch_dims(&self) -> Vec<u32> {
        let n = self.dims.len().saturating_sub(1);
        self.dims.iter().take(n).map(|&d| d as u32).collect()
    }

    /// The shape as it goes back on the wire.
    pub fn wire_dims(&self) -> Vec<u32> {
        self.dims.iter().map(|&d| d as u32).collect()
    }

    /// Fails unless `other` has the same shape as `self`.
    pub fn same_shape<G: Wire>(&self, other: &Input<G>) -> Result<(), Error> {
        if self.dims == other.dims {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "{}: shape {:?} does not match {} shape {:?}",
                other.field, other.dims, self.field, self.dims
            )))
        }
    }
}

/// A primary tensor of either dtype.
#[derive(Debug)]
pub enum Decoded {
    F32(Input<f32>),
    F64(Input<f64>),
}

/// An element type that can travel on the wire.
pub trait Wire: Element + bytemuck::Pod {
    /// The dtype tag of this type.
    const DTYPE: Dtype;

    /// Field number of this type's raw field in `Tensor`.
    const LE_FIELD: u32;

    /// Field number of this type's typed (packed repeated) field in `Tensor`.
    const TYPED_FIELD: u32;

    /// The `Tensor` field holding this type's values in `encoding`. Packed,
    /// both carry the same little-endian bytes behind the same key layout.
    fn field(encoding: Encoding) -> u32 {
        match encoding {
            Encoding::Typed => Self::TYPED_FIELD,
            Encoding::Raw => Self::LE_FIELD,
        }
    }

    /// Takes this type's values out of a tensor: (typed values, raw bytes).
    fn take(t: &mut Tensor) -> (Vec<Self>, Bytes);

    /// Puts values into a tensor in the given encoding, without copying.
    fn put(t: &mut Tensor, values: Vec<Self>, encoding: Encoding) {
        match encoding {
            Encoding::Typed => *Self::typed(t) = values,
            Encoding::Raw => Self::put_le(t, le_bytes(values)),
        }
    }

    /// The typed value field of this type.
    fn typed(t: &mut Tensor) -> &mut Vec<Self>;

    /// Puts little-endian bytes into the raw value field of this type.
    fn put_le(t: &mut Tensor, raw: Bytes);

    /// Wraps an input of this type as a `Decoded`.
    fn wrap(input: Input<Self>) -> Decoded;

    /// Recycled buffers of this type.
    fn pool() -> &'static Pool<Self>;
}

static F32_POOL: Pool<f32> = Pool::new();
static F64_POOL: Pool<f64> = Pool::new();

impl Wire for f32 {
    const DTYPE: Dtype = Dtype::F32;
    const LE_FIELD: u32 = 4;
    const TYPED_FIELD: u32 = 2;

    fn take(t: &mut Tensor) -> (Vec<Self>, Bytes) {
        (std::mem::take(&mut t.f32), std::mem::take(&mut t.f32_le))
    }

    fn typed(t: &mut Tensor) -> &mut Vec<Self> {
        &mut t.f32
    }

    fn put_le(t: &mut Tensor, raw: Bytes) {
        t.f32_le = raw;
    }

    fn wrap(input: Input<Self>) -> Decoded {
        Decoded::F32(input)
    }

    fn pool() -> &'static Pool<Self> {
        &F32_POOL
    }
}

impl Wire for f64 {
    const DTYPE: Dtype = Dtype::F64;
    const LE_FIELD: u32 = 5;
    const TYPED_FIELD: u32 = 3;

    fn take(t: &mut Tensor) -> (Vec<Self>, Bytes) {
        (std::mem::take(&mut t.f64), std::mem::take(&mut t.f64_le))
    }

    fn typed(t: &mut Tensor) -> &mut Vec<Self> {
        &mut t.f64
    }

    fn put_le(t: &mut Tensor, raw: Bytes) {
        t.f64_le = raw;
    }

    fn wrap(input: Input<Self>) -> Decoded {
        Decoded::F64(input)
    }

    fn pool() -> &'static Pool<Self> {
        &F64_POOL
    }
}

/// Builds a response tensor from computed values.
pub fn to_tensor<F: Wire>(shape: Vec<u32>, values: Vec<F>, encoding: Encoding) -> Tensor {
    let mut t = Tensor {
        shape,
        ..Tensor::default()
    };
    F::put(&mut t, values, encoding);
    t
}

/// The vector's memory handed to `Bytes` as is: no copy on little-endian
/// hosts; it returns to the pool once the response is encoded.
fn le_bytes<F: Wire>(values: Vec<F>) -> Bytes {
    if cfg!(target_endian = "little") {
        pod_bytes(values)
    } else {
        let mut out = Vec::with_capacity(values.len() * std::mem::size_of::<F>());
        for v in &values {
            let mut b = bytemuck::bytes_of(v).to_vec();
            b.reverse();
            out.extend_from_slice(&b);
        }
        Bytes::from(out)
    }
}

/// The vector's memory, in native byte order, as `Bytes` without a copy;
/// it goes back to the pool when the last `Bytes` is dropped.
pub(super) fn pod_bytes<F: Wire>(values: Vec<F>) -> Bytes {
    Bytes::from_owner(PodVec(values))
}

struct PodVec<F: Wire>(Vec<F>);

impl<F: Wire> AsRef<[u8]> for PodVec<F> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl<F: Wire> Drop for PodVec<F> {
    fn drop(&mut self) {
        F::pool().give(std::mem::take(&mut self.0));
    }
}

/// Shape of a tensor as `(dims, rows, k)`, with every product overflow-checked.
fn layout(field: &'static str, shape: &[u32]) -> Result<(Vec<usize>, usize, usize), Error> {
    let (&k, batch) = shape
        .split_last()
        .ok_or_else(|| Error::invalid(format!("{field}.shape: must have at least one dim")))?;
    if k == 0 {
        return Err(Error::invalid(format!(
            "{field}.shape: last dim (the softmax axis) must be at least 1, got shape {shape:?}"
        )));
    }
    let rows = batch
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
    let total = rows.and_then(|r| r.checked_mul(k as usize));
    match (rows, total) {
        (Some(rows), Some(_)) => Ok((
            shape.iter().map(|&d| d as usize).collect(),
            rows,
            k as usize,
        )),
        _ => Err(Error::invalid(format!(
            "{field}.shape: {shape:?} has more elements than this machine can address"
        ))),
    }
}

/// Which value fields of a tensor are set, as `(dtype, encoding)` pairs.
fn fields_set(t: &Tensor) -> Vec<(Dtype, Encoding, &'static str)> {
    let mut set = Vec::new();
    if !t.f32.is_empty() {
        set.push((Dtype::F32, Encoding::Typed, "f32"));
    }
    if !t.f64.is_empty() {
        set.push((Dtype::F64, Encoding::Typed, "f64"));
    }
    if !t.f32_le.is_empty() {
        set.push((Dtype::F32, Encoding::Raw, "f32_le"));
    }
    if !t.f64_le.is_empty() {
        set.push((Dtype::F64, Encoding::Raw, "f64_le"));
    }
    set
}

/// The dtype and encoding a tensor carries; an empty tensor takes `default`.
fn kind(
    field: &'static str,
    t: &Tensor,
    default: (Dtype, Encoding),
) -> Result<(Dtype, Encoding), Error> {
    match fields_set(t).as_slice() {
        [] => Ok(default),
        [(d, e, _)] => Ok((*d, *e)),
        many => {
            let names: Vec<&str> = many.iter().map(|(_, _, n)| *n).collect();
            Err(Error::invalid(format!(
                "{field}: exactly one of f32, f64, f32_le, f64_le must hold the values, found {}",
                names.join(" and ")
            )))
        }
    }
}

/// Decodes the primary tensor of a request, whose dtype decides the call's.
pub fn decode(field: &'static str, tensor: Option<Tensor>) -> Result<Decoded, Error> {
    let t = tensor.ok_or_else(|| Error::invalid(format!("{field}: missing tensor")))?;
    match kind(field, &t, (Dtype::F32, Encoding::Typed))?.0 {
        Dtype::F32 => decode_as::<f32>(field, t).map(f32::wrap),
        Dtype::F64 => decode_as::<f64>(field, t).map(f64::wrap),
    }
}

/// Decodes a secondary tensor, which must have dtype `F`.
pub fn decode_same<F: Wire>(
    field: &'static str,
    tensor: Option<Tensor>,
) -> Result<Input<F>, Error> {
    let t = tensor.ok_or_else(|| Error::invalid(format!("{field}: missing tensor")))?;
    let (dtype, _) = kind(field, &t, (F::DTYPE, Encoding::Typed))?;
    if dtype != F::DTYPE {
        return Err(Error::invalid(format!(
            "{field}: dtype {} does not match the request's dtype {}",
            dtype.name(),
            F::DTYPE.name()
        )));
    }
    decode_as(field, t)
}

fn decode_as<F: Wire>(field: &'static str, mut t: Tensor) -> Result<Input<F>, Error> {
    let (dims, rows, k) = layout(field, &t.shape)?;
    let want = rows * k;
    let (typed, raw) = F::take(&mut t);
    let width = std::mem::size_of::<F>();
    let (buf, encoding) = if !raw.is_empty() {
        // Named only on failure: a clean call formats nothing.
        let name = || format!("{field}.{}_le", F::DTYPE.name());
        if raw.len() % width != 0 {
            return Err(Error::invalid(format!(
                "{}: {} bytes is not a whole number of {width}-byte values",
                name(),
                raw.len()
            )));
        }
        if raw.len() / width != want {
            return Err(Error::invalid(format!(
                "{}: holds {} values but shape {:?} needs {want}",
                name(),
                raw.len() / width,
                dims
            )));
        }
        (from_le(raw), Encoding::Raw)
    } else {
        if typed.len() != want {
            return Err(Error::invalid(format!(
                "{field}.{}: holds {} values but shape {:?} needs {want}",
                F::DTYPE.name(),
                typed.len(),
                dims
            )));
        }
        (Buf::Decoded(typed), Encoding::Typed)
    };
    Ok(Input {
        field,
        dims,
        rows,
        k,
        encoding,
        buf,
    })
}

/// Raw bytes viewed in place when aligned on a little-endian host. Requests
/// are rarely aligned (the field follows a 5-byte gRPC header and a few tag
/// bytes), so the rest are read through [`Input::block`].
fn from_le<F: Wire>(raw: Bytes) -> Buf<F> {
    if cfg!(target_endian = "little") && bytemuck::try_cast_slice::<u8, F>(&raw).is_ok() {
        Buf::Shared(raw)
    } else {
        Buf::Unaligned(raw)
    }
}

/// Aligned bytes as values; the alignment and length were checked at decode.
fn cast<F: Wire>(raw: &Bytes) -> Result<&[F], Error> {
    bytemuck::try_cast_slice(raw)
        .map_err(|e| Error::Internal(format!("raw values could not be viewed in place: {e}")))
}

/// `scratch` set to the values of little-endian `raw`. Written straight
/// into its spare capacity: resizing first would zero-fill a freshly
/// allocated scratch only to overwrite it.
pub(super) fn fill_le<F: Wire>(raw: &[u8], scratch: &mut Vec<F>) {
    scratch.clear();
    if cfg!(target_endian = "little") {
        let width = std::mem::size_of::<F>();
        scratch.extend(
            raw.chunks_exact(width)
                .map(bytemuck::pod_read_unaligned::<F>),
        );
    } else {
        scratch.resize(raw.len() / std::mem::size_of::<F>(), F::zero());
        copy_le(raw, scratch);
    }
}

/// Little-endian bytes into values of the same total size.
pub(super) fn copy_le<F: Wire>(raw: &[u8], out: &mut [F]) {
    let dst: &mut [u8] = bytemuck::cast_slice_mut(out);
    let n = dst.len().min(raw.len());
    if let (Some(d), Some(r)) = (dst.get_mut(..n), raw.get(..n)) {
        d.copy_from_slice(r);
        if cfg!(target_endian = "big") {
            for chunk in d.chunks_exact_mut(std::mem::size_of::<F>()) {
                chunk.reverse();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn typed_values_go_back_to_the_allocator_and_pooled_copies_to_the_pool() {
        // f64, which no other test here pools; 2 x 5000 values is over the
        // pool's 64 KiB floor.
        let n = 10_000;
        let typed = Tensor {
            shape: vec![2, 5000],
            f64: vec![0.5; n],
            ..Tensor::default()
        };
        let idle = f64::pool().idle();
        drop(decode_as::<f64>("x", typed).unwrap());
        assert_eq!(f64::pool().idle(), idle, "a typed input is not pooled");

        let mut raw = vec![0u8; 1];
        raw.extend((0..n).flat_map(|i| (i as f64).to_le_bytes()));
        let unaligned = Tensor {
            shape: vec![2, 5000],
            f64_le: Bytes::from(raw).slice(1..),
            ..Tensor::default()
        };
        let x = decode_as::<f64>("x", unaligned).unwrap().contiguous();
        assert_eq!(x.values().unwrap()[n - 1], (n - 1) as f64);
        drop(x);
        assert_eq!(f64::pool().idle(), idle + 1, "its pooled copy goes back");
    }

    /// Raw f32 bytes of `v`, starting `shift` bytes into their buffer.
    fn raw_at(v: &[f32], shift: usize) -> Tensor {
        let mut bytes = vec![0u8; shift];
        bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        Tensor {
            shape: vec![3, 4],
            f32_le: Bytes::from(bytes).slice(shift..),
            ..Tensor::default()
        }
    }

    #[test]
    fn every_alignment_reads_the_same_values() {
        let v: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        for shift in 0..8 {
            let x = decode_same::<f32>("x", Some(raw_at(&v, shift))).unwrap();
            let mut scratch = Vec::new();
            assert_eq!(
                x.block(1..3, &mut scratch).unwrap(),
                &v[4..12],
                "shift {shift}"
            );
            assert_eq!(
                x.block(0..1, &mut scratch).unwrap(),
                &v[0..4],
                "shift {shift}"
            );
            assert!(x.block(2..4, &mut scratch).is_err(), "rows past the end");
            let x = x.contiguous();
            assert_eq!(x.values().unwrap(), &v[..], "shift {shift}");
        }
    }

    #[test]
    fn values_taken_for_the_results_are_not_read_again() {
        let v = [2.5f32; 8];
        let mut raw = BytesMut::with_capacity(v.len() * 4 + 8);
        raw.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        let t = Tensor {
            shape: vec![2, 4],
            f32_le: raw.freeze(),
            ..Tensor::default()
        };
        let mut x = decode_same::<f32>("x", Some(t)).unwrap();
        assert!(x.take_reused().is_some(), "a sole owner gives its bytes up");
        let taken = |e: Error| e.to_string().contains("taken for the results");
        assert!(x.values().is_err_and(taken));
        assert!(x.block(0..1, &mut Vec::new()).is_err_and(taken));
        assert!(x.take_reused().is_none(), "nothing left to take");
    }

    #[test]
    fn unaligned_values_need_a_copy_first() {
        let v = [1.0f32; 12];
        // One of these two shifts is misaligned for f32 wherever the buffer lands.
        let misaligned = (1..3)
            .map(|shift| decode_same::<f32>("x", Some(raw_at(&v, shift))).unwrap())
            .find(|x| matches!(x.buf, Buf::Unaligned(_)))
            .expect("a misaligned tensor");
        assert!(misaligned.values().is_err());
        assert_eq!(misaligned.contiguous().values().unwrap(), &v[..]);
    }
}
