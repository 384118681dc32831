//! Responses the service encodes itself: a tensor's results computed
//! straight into the gRPC message that carries them.
//!
//! Through tonic, a result tensor is written twice: once by the kernel,
//! once more when prost copies the field into tonic's encode buffer, a cold
//! read and a cold write of the whole tensor (12% of a Forward [256,4096]
//! call). Here the kernel writes the values into a recycled buffer that is
//! sent as it is, right behind a few bytes holding the 5-byte gRPC prefix
//! and the protobuf keys and lengths. A packed typed field is the same
//! little-endian values behind the same key layout as a raw one, so both
//! are framed here.
//!
//! Those few bytes live in the same buffer, in the last bytes of the values
//! slots before the first value, so that the message leaves as one `Bytes`
//! and so as one run of DATA frames. Sent apart, the prefix arrived alone
//! in a DATA frame of its own, and a tonic client on glibc (softmaxd-bench
//! at concurrency 16) took 60-110 page faults per [64,1000] answer, against
//! 1-3 for the same answer in one piece, and served half the calls/s: its
//! decode buffers, sized differently after a 20-byte first frame, went back
//! to the kernel between calls.

use super::error::Error;
use super::tensor::{pod_bytes, Encoding, Wire};
use bytes::Bytes;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, uint32, WireType};

/// `Tensor.shape`'s field number.
const SHAPE_FIELD: u32 = 1;
/// Field number of the result tensor in ForwardResponse (`output`),
/// BackwardResponse (`grad_logits`) and JacobianResponse (`jacobian`).
pub const RESULT_FIELD: u32 = 1;
/// gRPC's message prefix: a compressed flag and a big-endian length.
pub const PREFIX: usize = 5;

/// The prefix of an uncompressed message of `len` bytes; `None` past gRPC's
/// 4 GiB.
pub fn prefix(len: usize) -> Option<[u8; PREFIX]> {
    let [a, b, c, d] = u32::try_from(len).ok()?.to_be_bytes();
    Some([0, a, b, c, d])
}

/// What a prefix says: whether the message is compressed, and its length.
pub fn declared(head: [u8; PREFIX]) -> (bool, usize) {
    let [flag, a, b, c, d] = head;
    let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
    (flag != 0, len)
}

/// A unary answer: a message for tonic to encode, or one already encoded as
/// a whole gRPC length-prefixed message.
#[derive(Debug)]
pub enum Reply<M> {
    Message(M),
    Encoded(Encoded),
}

/// One whole gRPC length-prefixed message, prefix included.
#[derive(Debug)]
pub struct Encoded {
    pub message: Bytes,
}

impl<M> Reply<M> {
    /// The same answer around another message type.
    pub fn map<N>(self, f: impl FnOnce(M) -> N) -> Reply<N> {
        match self {
            Reply::Message(m) => Reply::Message(f(m)),
            Reply::Encoded(e) => Reply::Encoded(e),
        }
    }

    /// The message, for callers that never ask for an encoded answer.
    pub fn into_message(self) -> Result<M, Error> {
        match self {
            Reply::Message(m) => Ok(m),
            Reply::Encoded(_) => Err(Error::Internal(
                "an encoded answer reached a caller that needs a message".into(),
            )),
        }
    }
}

/// A response message `{ RESULT_FIELD: Tensor { shape, <F> or <F>_le } }`
/// being filled: one recycled `Vec<F>` whose first `lead` slots end with
/// the message's prefix, keys and lengths, and whose other slots are the
/// values, aligned for the kernel. A CrossEntropyResponse also carries its
/// `loss` tensor in those first slots, ahead of `grad_logits`, as bytes
/// written once the losses are known.
pub struct Framed<F: Wire> {
    buf: Vec<F>,
    /// Slots before the first value.
    lead: usize,
    /// Byte offset of the message's first byte in `buf`.
    start: usize,
    /// Bytes of the leading tensor's values in `buf` (empty if none).
    leading: std::ops::Range<usize>,
}

/// JacobianResponse's `first_row`.
const FIRST_ROW_FIELD: u32 = 2;

/// CrossEntropyResponse's field numbers: `loss`, then `grad_logits`.
const LOSS_FIELD: u32 = 1;
const GRAD_FIELD: u32 = 2;

/// A tensor to encode: its field number in the message, its shape and its
/// number of values.
struct Part<'a> {
    field: u32,
    shape: &'a [u32],
    n: usize,
}

impl<F: Wire> Framed<F> {
    /// Room for the `n` values of a result tensor of `shape` in `encoding`,
    /// or `None` where tonic's own encoding must do: no values (proto3 leaves
    /// the field out), a big-endian host, or a message over gRPC's 4 GiB
    /// length.
    pub fn new(shape: &[u32], n: usize, encoding: Encoding) -> Option<Self> {
        let part = Part {
            field: RESULT_FIELD,
            shape,
            n,
        };
        Self::build(None, part, encoding, 0)
    }

    /// Room for one JacobianStream message: `n` values of `shape` from
    /// vector `first_row` on. The `first_row` field (left out when 0, as
    /// proto3 does) goes ahead of the tensor, which any decoder accepts.
    pub fn jacobian_chunk(
        shape: &[u32],
        n: usize,
        first_row: u64,
        encoding: Encoding,
    ) -> Option<Self> {
        let part = Part {
            field: RESULT_FIELD,
            shape,
            n,
        };
        Self::build(None, part, encoding, first_row)
    }

    /// Room for a CrossEntropyResponse: `m` losses of shape `loss_shape`
    /// (see [`Self::set_leading`]) ahead of the `n` gradient values of
    /// `shape`, which the kernel writes as with [`Self::new`].
    pub fn cross_entropy(
        loss_shape: &[u32],
        m: usize,
        shape: &[u32],
        n: usize,
        encoding: Encoding,
    ) -> Option<Self> {
        let loss = Part {
            field: LOSS_FIELD,
            shape: loss_shape,
            n: m,
        };
        let grad = Part {
            field: GRAD_FIELD,
            shape,
            n,
        };
        Self::build(Some(loss), grad, encoding, 0)
    }

    fn build(
        leading: Option<Part<'_>>,
        values: Part<'_>,
        encoding: Encoding,
        first_row: u64,
    ) -> Option<Self> {
        let width = std::mem::size_of::<F>();
        let field = F::field(encoding);
        // The length of a part's Tensor, checked against overflow (which
        // also bounds its `n * width` below).
        let tensor = |p: &Part<'_>| {
            let data = p.n.checked_mul(width)?;
            uint32::encoded_len_packed(SHAPE_FIELD, p.shape)
                .checked_add(key_len(field) + encoded_len_varint(data as u64))?
                .checked_add(data)
        };
        let field_len =
            |p: &Part<'_>, len: usize| key_len(p.field) + encoded_len_varint(len as u64) + len;
        if values.n == 0 || leading.as_ref().is_some_and(|l| l.n == 0) {
            return None;
        }
        if cfg!(target_endian = "big") {
            return None;
        }
        let tensor_len = tensor(&values)?;
        let mut message = field_len(&values, tensor_len);
        if first_row != 0 {
            message += key_len(FIRST_ROW_FIELD) + encoded_len_varint(first_row);
        }
        let leading_len = match &leading {
            Some(l) => {
                let len = tensor(l)?;
                message = message.checked_add(field_len(l, len))?;
                Some(len)
            }
            None => None,
        };
        let message_prefix = prefix(message)?;

        // The part's key, its Tensor's length, its shape and its values' key
        // and length: everything up to its values.
        let put_head = |p: &Part<'_>, len: usize, head: &mut Vec<u8>| {
            encode_key(p.field, WireType::LengthDelimited, head);
            encode_varint(len as u64, head);
            uint32::encode_packed(SHAPE_FIELD, p.shape, head);
            encode_key(field, WireType::LengthDelimited, head);
            encode_varint((p.n * width) as u64, head);
        };
        let mut head = Vec::with_capacity(PREFIX + 64);
        head.extend_from_slice(&message_prefix);
        if first_row != 0 {
            encode_key(FIRST_ROW_FIELD, WireType::Varint, &mut head);
            encode_varint(first_row, &mut head);
        }
        let mut leading_at = 0..0;
        if let (Some(l), Some(len)) = (&leading, leading_len) {
            put_head(l, len, &mut head);
            let at = head.len();
            head.resize(at + l.n * width, 0);
            leading_at = at..head.len();
        }
        put_head(&values, tensor_len, &mut head);

        let lead = head.len().div_ceil(width);
        let start = lead * width - head.len();
        let mut buf = F::pool().take(lead.checked_add(values.n)?);
        let slots: &mut [u8] = bytemuck::cast_slice_mut(buf.get_mut(..lead)?);
        slots.get_mut(start..)?.copy_from_slice(&head);
        Some(Self {
            buf,
            lead,
            start,
            leading: leading_at.start + start..leading_at.end + start,
        })
    }

    /// Writes the leading tensor's values (the losses of a message made by
    /// [`Self::cross_entropy`]); only little-endian hosts frame messages,
    /// so their bytes go as they are.
    pub fn set_leading(&mut self, values: &[F]) -> Result<(), Error> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.buf);
        let src: &[u8] = bytemuck::cast_slice(values);
        match bytes.get_mut(self.leading.clone()) {
            Some(dst) if dst.len() == src.len() => {
                dst.copy_from_slice(src);
                Ok(())
            }
            _ => Err(Error::Internal(format!(
                "framed answer: {} leading bytes for {} values",
                self.leading.len(),
                values.len()
            ))),
        }
    }

    /// The values, for the kernel to write.
    pub fn values_mut(&mut self) -> &mut [F] {
        self.buf.get_mut(self.lead..).unwrap_or_default()
    }

    /// The whole encoded message; its buffer returns to the pool once sent.
    pub fn finish(self) -> Encoded {
        let start = self.start;
        Encoded {
            message: pod_bytes(self.buf).slice(start..),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{
        BackwardResponse, CrossEntropyResponse, ForwardResponse, JacobianResponse, Tensor,
    };
    use crate::service::tensor::to_tensor;
    use prost::Message;

    /// Fills a Framed with `v` and splits the result into prefix and message.
    fn framed<F: Wire>(shape: &[u32], v: &[F], encoding: Encoding) -> (Vec<u8>, Bytes) {
        let mut f = Framed::<F>::new(shape, v.len(), encoding).expect("framed");
        f.values_mut().copy_from_slice(v);
        let all = f.finish().message;
        (all.slice(..PREFIX).to_vec(), all.slice(PREFIX..))
    }

    #[test]
    fn decodes_as_the_message_prost_would_encode() {
        for (shape, n) in [
            (vec![3u32, 4], 12usize),
            (vec![1, 1, 5], 5),
            (vec![200, 300], 60000),
        ] {
            let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 3.0).collect();
            let raw = Tensor {
                shape: shape.clone(),
                f32_le: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ..Tensor::default()
            };
            let typed = Tensor {
                shape: shape.clone(),
                f32: v.clone(),
                ..Tensor::default()
            };
            for (encoding, want) in [(Encoding::Raw, raw), (Encoding::Typed, typed)] {
                let (prefix, msg) = framed(&shape, &v, encoding);
                assert_eq!(prefix[0], 0, "not compressed");
                assert_eq!(&prefix[1..], &(msg.len() as u32).to_be_bytes());
                let got = ForwardResponse::decode(msg.clone()).unwrap();
                let what = format!("{encoding:?}, shape {shape:?}");
                assert_eq!(got.output.as_ref(), Some(&want), "{what}");
                let canonical = ForwardResponse { output: Some(want) }.encode_to_vec();
                assert_eq!(&msg[..], &canonical[..], "byte for byte, {what}");
            }
        }
    }

    #[test]
    fn f64_values_go_in_f64_le_of_a_backward_response() {
        let v = [1.5f64, -2.0, 1e300];
        let (_, typed) = framed(&[3], &v, Encoding::Typed);
        let got = BackwardResponse::decode(typed)
            .unwrap()
            .grad_logits
            .unwrap();
        assert_eq!((got.shape, got.f64), (vec![3], v.to_vec()));
        let (_, msg) = framed(&[3], &v, Encoding::Raw);
        let got = BackwardResponse::decode(msg).unwrap().grad_logits.unwrap();
        assert_eq!(got.shape, vec![3]);
        assert!(got.f32_le.is_empty());
        let back: Vec<f64> = got
            .f64_le
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, v);
    }

    #[test]
    fn the_message_is_one_buffer_that_goes_back_to_the_pool() {
        // Large enough to be pooled, and a shape whose head (prefix, keys,
        // lengths) does not fill whole values, so the message starts inside
        // the buffer's first slots.
        let shape = [64u32, 1000];
        let n = 64_000;
        let mut f = Framed::<f32>::new(&shape, n, Encoding::Typed).expect("framed");
        let values = f.values_mut();
        assert_eq!(values.len(), n);
        values.fill(0.5);
        let at = values.as_ptr() as usize;
        let message = f.finish().message;
        let head = message.len() - n * 4;
        assert_eq!(
            message.as_ptr() as usize + head,
            at,
            "values follow the head"
        );
        assert!(
            head > PREFIX && !head.is_multiple_of(4),
            "head of {head} bytes"
        );
        assert_eq!(&message[head..head + 4], &0.5f32.to_le_bytes());
        let idle = f32::pool().idle();
        drop(message);
        assert_eq!(f32::pool().idle(), idle + 1, "back in the pool once sent");
        let mut again = Framed::<f32>::new(&shape, n, Encoding::Typed).expect("framed");
        assert_eq!(again.values_mut().as_ptr() as usize, at, "and reused");
    }

    #[test]
    fn a_cross_entropy_answer_is_the_message_prost_would_encode() {
        fn check<F: Wire + std::fmt::Debug>(batch: &[u32], k: u32, encoding: Encoding) {
            let rows: usize = batch.iter().map(|&d| d as usize).product();
            let n = rows * k as usize;
            let loss: Vec<F> = (0..rows).map(|i| F::from(i).unwrap() + F::one()).collect();
            let grad: Vec<F> = (0..n)
                .map(|i| F::from(i).unwrap() * F::from(0.5).unwrap())
                .collect();
            let mut shape = batch.to_vec();
            shape.push(k);
            let mut f = Framed::<F>::cross_entropy(batch, rows, &shape, n, encoding).unwrap();
            f.values_mut().copy_from_slice(&grad);
            f.set_leading(&loss).unwrap();
            assert!(
                f.set_leading(&loss[1..]).is_err(),
                "a wrong count is refused"
            );
            let all = f.finish().message;
            let msg = all.slice(PREFIX..);
            assert_eq!(&all[1..PREFIX], &(msg.len() as u32).to_be_bytes());
            let want = CrossEntropyResponse {
                loss: Some(to_tensor(batch.to_vec(), loss, encoding)),
                grad_logits: Some(to_tensor(shape, grad, encoding)),
            };
            let what = format!("{:?} {encoding:?} batch {batch:?} k {k}", F::DTYPE);
            assert_eq!(&msg[..], &want.encode_to_vec()[..], "byte for byte, {what}");
        }
        for encoding in [Encoding::Raw, Encoding::Typed] {
            // A 1-D request has one loss and an empty loss shape; 3 and
            // 7-value rows leave the gradient's head at odd lengths.
            for (batch, k) in [
                (&[3u32, 4][..], 7u32),
                (&[][..], 5),
                (&[2, 3][..], 3),
                (&[64][..], 1000),
            ] {
                check::<f32>(batch, k, encoding);
                check::<f64>(batch, k, encoding);
            }
        }
        assert!(Framed::<f32>::cross_entropy(&[0], 0, &[0, 4], 0, Encoding::Raw).is_none());
    }

    #[test]
    fn no_values_are_left_to_tonic() {
        assert!(Framed::<f32>::new(&[0, 7], 0, Encoding::Raw).is_none());
        assert!(Framed::<f64>::new(&[0], 0, Encoding::Typed).is_none());
    }

    #[test]
    fn a_jacobian_chunk_decodes_with_its_first_row() {
        fn check<F: Wire>(first_row: u64, encoding: Encoding) {
            let (n, k) = (3usize, 5u32);
            let v: Vec<F> = (0..n * 25).map(|i| F::of(i as f64 * 0.5 - 7.0)).collect();
            let shape = [n as u32, k, k];
            let mut f = Framed::<F>::jacobian_chunk(&shape, v.len(), first_row, encoding).unwrap();
            f.values_mut().copy_from_slice(&v);
            let all = f.finish().message;
            let msg = all.slice(PREFIX..);
            assert_eq!(&all[1..PREFIX], &(msg.len() as u32).to_be_bytes());
            let got = JacobianResponse::decode(msg).unwrap();
            let want = JacobianResponse {
                jacobian: Some(to_tensor(shape.to_vec(), v, encoding)),
                first_row,
            };
            assert_eq!(
                got,
                want,
                "{:?} {encoding:?} from row {first_row}",
                F::DTYPE
            );
        }
        for encoding in [Encoding::Raw, Encoding::Typed] {
            for first_row in [0, 1, 127, 128, 300_000, u64::MAX] {
                check::<f32>(first_row, encoding);
                check::<f64>(first_row, encoding);
            }
        }
    }
}
