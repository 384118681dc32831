//! `softmax.v1.Tensor`, written by hand rather than generated, so that its
//! packed `f32`/`f64` fields are decoded and encoded as whole slices: prost's
//! generated code moves them one value at a time through `Buf::get_f32_le`,
//! which was a third of the server's time on typed requests. The wire format
//! is exactly the proto's (tests/proto_tensor.rs checks it against a
//! prost-generated twin).

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{
    self, decode_varint, encode_key, encode_varint, encoded_len_varint, key_len, DecodeContext,
    WireType,
};
use prost::DecodeError;

/// A dense row-major tensor. The last dimension (k >= 1) is the softmax axis;
/// leading dimensions are batch dimensions. Exactly one of the value fields is
/// set; a response uses the dtype and encoding of the request's primary tensor.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct Tensor {
    /// Dimensions, at least one; the product of all but the last may be 0.
    pub shape: Vec<u32>,
    /// Values as 32-bit floats (typed: friendly to JSON tools such as grpcurl).
    pub f32: Vec<f32>,
    /// Values as 64-bit floats (typed).
    pub f64: Vec<f64>,
    /// Values as raw little-endian IEEE-754 binary32, 4 bytes each (fast path).
    pub f32_le: Bytes,
    /// Values as raw little-endian IEEE-754 binary64, 8 bytes each (fast path).
    pub f64_le: Bytes,
}

impl prost::Message for Tensor {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::uint32::encode_packed(1, &self.shape, buf);
        encode_packed(2, &self.f32, buf, |v, b| b.put_f32_le(*v));
        encode_packed(3, &self.f64, buf, |v, b| b.put_f64_le(*v));
        if !self.f32_le.is_empty() {
            encoding::bytes::encode(4, &self.f32_le, buf);
        }
        if !self.f64_le.is_empty() {
            encoding::bytes::encode(5, &self.f64_le, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::uint32::merge_repeated(wire_type, &mut self.shape, buf, ctx),
            2 if wire_type == WireType::LengthDelimited => {
                merge_packed(&mut self.f32, buf, f32::from_le_bytes)
            }
            2 => encoding::float::merge_repeated(wire_type, &mut self.f32, buf, ctx),
            3 if wire_type == WireType::LengthDelimited => {
                merge_packed(&mut self.f64, buf, f64::from_le_bytes)
            }
            3 => encoding::double::merge_repeated(wire_type, &mut self.f64, buf, ctx),
            4 => encoding::bytes::merge(wire_type, &mut self.f32_le, buf, ctx),
            5 => encoding::bytes::merge(wire_type, &mut self.f64_le, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let bytes = |tag, b: &Bytes| {
            if b.is_empty() {
                0
            } else {
                encoding::bytes::encoded_len(tag, b)
            }
        };
        encoding::uint32::encoded_len_packed(1, &self.shape)
            + packed_len(2, std::mem::size_of_val(self.f32.as_slice()))
            + packed_len(3, std::mem::size_of_val(self.f64.as_slice()))
            + bytes(4, &self.f32_le)
            + bytes(5, &self.f64_le)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Encoded size of a packed fixed-width field of `len` bytes (0 if empty).
fn packed_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }
}

/// Writes `values` as one packed field: on little-endian hosts the slice's
/// bytes as they are, else value by value through `put`.
fn encode_packed<T: bytemuck::Pod>(
    tag: u32,
    values: &[T],
    buf: &mut impl BufMut,
    put: impl Fn(&T, &mut dyn BufMut),
) {
    if values.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    let bytes: &[u8] = bytemuck::cast_slice(values);
    encode_varint(bytes.len() as u64, buf);
    if cfg!(target_endian = "little") {
        buf.put_slice(bytes);
    } else {
        for v in values {
            put(v, buf);
        }
    }
}

/// Appends one packed field's values (its length prefix comes next in
/// `buf`), converting whole contiguous chunks of the buffer at once.
fn merge_packed<T: Default, const W: usize>(
    values: &mut Vec<T>,
    buf: &mut impl Buf,
    from_le: fn([u8; W]) -> T,
) -> Result<(), DecodeError> {
    let len =
        usize::try_from(decode_varint(buf)?).map_err(|_| malformed("packed field too long"))?;
    if len > buf.remaining() {
        return Err(malformed("buffer underflow"));
    }
    if len % W != 0 {
        return Err(malformed(
            "packed fixed-width field length is not a multiple of the value size",
        ));
    }
    if values.is_empty() {
        values.reserve_exact(len / W);
    } else {
        values.reserve(len / W);
    }
    let mut left = len;
    while left > 0 {
        let chunk = buf.chunk();
        let take = chunk.len().min(left) / W * W;
        if take == 0 {
            // A value split across two chunks of the buffer.
            let mut one = [0u8; W];
            buf.copy_to_slice(&mut one);
            values.push(from_le(one));
            left -= W;
            continue;
        }
        let whole = chunk.get(..take).unwrap_or_default();
        values.extend(
            whole
                .chunks_exact(W)
                .map(|c| <[u8; W]>::try_from(c).map_or_else(|_| T::default(), from_le)),
        );
        buf.advance(take);
        left -= take;
    }
    Ok(())
}

/// A decode error with `why`. prost marks `DecodeError::new` deprecated
/// (meant for its own generated code, to be removed in a breaking release)
/// but offers no other constructor; Cargo.toml pins prost 0.14.
#[allow(deprecated)]
fn malformed(why: &'static str) -> DecodeError {
    DecodeError::new(why)
}
