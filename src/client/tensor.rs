//! ndarray ⇄ `softmax.v1.Tensor`: f32/f64 arrays, raw little-endian or typed.

use super::error::ClientError;
use crate::proto::v1::Tensor;
use bytes::Bytes;
use ndarray::{ArrayD, ArrayView, Dimension, IxDyn};

/// How values travel: raw little-endian bytes (fast) or typed repeated fields
/// (what JSON tools such as grpcurl use).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Raw,
    Typed,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The element types softmaxd computes in: `f32` and `f64`.
pub trait Float: bytemuck::Pod + Send + Sync + sealed::Sealed + 'static {
    /// The dtype's name in messages.
    const NAME: &'static str;
    /// Appends the little-endian bytes of `self`.
    fn push_le(self, out: &mut Vec<u8>);
    /// Reads one value from little-endian bytes (`chunk` has the type's size).
    fn read_le(chunk: &[u8]) -> Self;
    /// This dtype's raw field of `tensor`.
    fn raw_field(tensor: &mut Tensor) -> &mut Bytes;
    /// This dtype's typed field of `tensor`.
    fn typed_field(tensor: &mut Tensor) -> &mut Vec<Self>;
    /// True when `tensor` holds values of the other dtype.
    fn other_dtype(tensor: &Tensor) -> bool;
}

macro_rules! float {
    ($t:ty, $name:literal, $raw:ident, $typed:ident, $other_raw:ident, $other_typed:ident) => {
        impl Float for $t {
            const NAME: &'static str = $name;
            fn push_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(chunk: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(chunk);
                <$t>::from_le_bytes(b)
            }
            fn raw_field(tensor: &mut Tensor) -> &mut Bytes {
                &mut tensor.$raw
            }
            fn typed_field(tensor: &mut Tensor) -> &mut Vec<Self> {
                &mut tensor.$typed
            }
            fn other_dtype(tensor: &Tensor) -> bool {
                !tensor.$other_raw.is_empty() || !tensor.$other_typed.is_empty()
            }
        }
    };
}

float!(f32, "f32", f32_le, f32, f64_le, f64);
float!(f64, "f64", f64_le, f64, f32_le, f32);

/// Little-endian bytes of `a`'s values in row-major order, written once.
fn raw_bytes<T: Float, D: Dimension>(a: &ArrayView<'_, T, D>) -> Vec<u8> {
    match a.as_slice() {
        // Standard layout on a little-endian host: the memory already is the wire format.
        Some(s) if cfg!(target_endian = "little") => bytemuck::cast_slice::<T, u8>(s).to_vec(),
        _ => {
            let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<T>());
            a.iter().for_each(|&v| v.push_le(&mut out));
            out
        }
    }
}

fn values_from_le<T: Float>(raw: &[u8]) -> Result<Vec<T>, ClientError> {
    let size = std::mem::size_of::<T>();
    if !raw.len().is_multiple_of(size) {
        return Err(ClientError::Response(format!(
            "{} raw bytes are not whole {} values",
            raw.len(),
            T::NAME
        )));
    }
    Ok(if cfg!(target_endian = "little") {
        // One copy into an aligned vector: received bytes have no alignment guarantee.
        bytemuck::allocation::pod_collect_to_vec(raw)
    } else {
        raw.chunks_exact(size).map(T::read_le).collect()
    })
}

/// The wire tensor of `a` (row-major whatever `a`'s memory layout).
pub fn encode<T: Float, D: Dimension>(
    a: &ArrayView<'_, T, D>,
    encoding: Encoding,
    name: &str,
) -> Result<Tensor, ClientError> {
    let shape = a
        .shape()
        .iter()
        .map(|&d| {
            u32::try_from(d)
                .map_err(|_| ClientError::Input(format!("{name}: dimension {d} exceeds 2^32 - 1")))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let mut tensor = Tensor {
        shape,
        ..Tensor::default()
    };
    if !a.is_empty() {
        match encoding {
            Encoding::Raw => *T::raw_field(&mut tensor) = Bytes::from(raw_bytes(a)),
            Encoding::Typed => *T::typed_field(&mut tensor) = a.iter().copied().collect(),
        }
    }
    Ok(tensor)
}

/// The array held by a response tensor; `None` (absent) is an empty array of `empty_shape`.
pub fn decode<T: Float>(
    tensor: Option<Tensor>,
    empty_shape: &[usize],
) -> Result<ArrayD<T>, ClientError> {
    let Some(mut tensor) = tensor else {
        return ArrayD::from_shape_vec(IxDyn(empty_shape), Vec::new())
            .map_err(|_| ClientError::Response("missing tensor".into()));
    };
    if T::other_dtype(&tensor) {
        return Err(ClientError::Response(format!(
            "values of the other dtype for a {} request",
            T::NAME
        )));
    }
    let raw = std::mem::take(T::raw_field(&mut tensor));
    let values = if raw.is_empty() {
        std::mem::take(T::typed_field(&mut tensor))
    } else {
        values_from_le(&raw)?
    };
    let shape: Vec<usize> = tensor.shape.iter().map(|&d| d as usize).collect();
    let len = values.len();
    ArrayD::from_shape_vec(IxDyn(&shape), values)
        .map_err(|_| ClientError::Response(format!("tensor of shape {shape:?} holds {len} values")))
}
