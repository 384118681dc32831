//! Results written over the raw request bytes they are computed from, so a
//! raw call needs no output buffer of its own.
//!
//! Forward's output is exactly as large as its input, and once a row block
//! has been copied into the (cache-sized) scratch the kernel reads, its
//! input bytes are never read again. Writing the results there saves a
//! second tensor-sized buffer: its page faults or its trip through the
//! cache, and its share of the server's memory. Raw fields are rarely
//! aligned for `F` (they follow a 5-byte gRPC header and a few tag bytes),
//! so the results go `shift` bytes further up the same buffer, which is
//! why blocks are visited from the last to the first.

use super::error::Error;
use super::framed::{Framed, Reply};
use super::tensor::{fill_le, to_tensor, Input, Wire};
use crate::proto::v1::Tensor;
use bytes::{Buf, Bytes, BytesMut};
use std::marker::PhantomData;
use std::ops::Range;

/// A request's raw bytes, owned and writable, holding the results of the
/// blocks done so far.
pub struct Reused<F: Wire> {
    bytes: BytesMut,
    /// Results go this many bytes above their inputs.
    shift: usize,
    /// Values below this index may still be read; blocks must not reach it.
    unread: usize,
    _values: PhantomData<F>,
}

impl<F: Wire> Reused<F> {
    /// Takes `raw` back as a writable buffer, when nothing else holds it
    /// and its allocation has room to shift it to `F`'s alignment; else
    /// gives it back.
    pub fn take(raw: Bytes) -> Result<Self, Bytes> {
        if cfg!(target_endian = "big") || raw.is_empty() {
            return Err(raw);
        }
        let align = std::mem::align_of::<F>();
        let shift = (align - raw.as_ptr() as usize % align) % align;
        let mut bytes = raw.try_into_mut()?;
        let len = bytes.len();
        if bytes.capacity() < len + shift {
            // Growing would move the whole tensor: not worth it.
            return Err(bytes.freeze());
        }
        // Within capacity: writes `shift` bytes, never reallocates.
        bytes.resize(len + shift, 0);
        Ok(Self {
            bytes,
            shift,
            unread: len / std::mem::size_of::<F>(),
            _values: PhantomData,
        })
    }

    /// Copies the input values `span` into `scratch` and returns them with
    /// the slice their results go to. Spans must come from the end of the
    /// tensor towards its start: a block's results overwrite the first
    /// `shift` bytes of the block above it.
    pub fn block<'a>(
        &'a mut self,
        span: Range<usize>,
        scratch: &'a mut Vec<F>,
    ) -> Result<(&'a [F], &'a mut [F]), Error> {
        if span.start > span.end || span.end > self.unread {
            return Err(Error::Internal(format!(
                "reused buffer: values {span:?} already overwritten (next must end by {})",
                self.unread
            )));
        }
        let width = std::mem::size_of::<F>();
        let bytes = span.start * width..span.end * width;
        let input = self
            .bytes
            .get(bytes.clone())
            .ok_or_else(|| missing(&span))?;
        fill_le(input, scratch);
        let out = self
            .bytes
            .get_mut(bytes.start + self.shift..bytes.end + self.shift)
            .ok_or_else(|| missing(&span))?;
        let out = bytemuck::try_cast_slice_mut(out)
            .map_err(|e| Error::Internal(format!("reused buffer not aligned: {e}")))?;
        self.unread = span.start;
        Ok((scratch, out))
    }

    /// The results, as the bytes of a raw response field.
    pub fn finish(mut self) -> Bytes {
        self.bytes.advance(self.shift);
        self.bytes.freeze()
    }

    /// The results as a raw response tensor of shape `shape`.
    pub fn into_tensor(self, shape: Vec<u32>) -> Tensor {
        let mut t = Tensor {
            shape,
            ..Tensor::default()
        };
        F::put_le(&mut t, self.finish());
        t
    }
}

/// Where a call's results go: straight into the encoded response when the
/// server sends it as is, else over its raw request bytes when it could take
/// them, else a recycled buffer beside its input.
pub enum Results<'x, F: Wire> {
    /// Into the values of an encoded response to inputs `x`.
    Framed {
        x: &'x Input<F>,
        framed: Framed<F>,
    },
    /// Over the request bytes of rows of `k` values.
    Over {
        reused: Reused<F>,
        k: usize,
    },
    Beside {
        x: &'x Input<F>,
        out: Vec<F>,
    },
}

/// Where [`Results::new`] puts a call's results.
pub enum Target<F: Wire> {
    /// Into an encoded response.
    Framed(Framed<F>),
    /// Over the request bytes.
    Over(Reused<F>),
    /// Into a recycled buffer.
    Beside,
}

impl<F: Wire> Target<F> {
    /// For `x`: an encoded response when `encode` asks for one, else `x`'s
    /// request bytes if they can be taken, else a buffer.
    pub fn of(x: &mut Input<F>, encode: bool) -> Self {
        if encode {
            if let Some(framed) = Framed::new(&x.wire_dims(), x.len(), x.encoding) {
                return Target::Framed(framed);
            }
        }
        x.take_reused().map_or(Target::Beside, Target::Over)
    }
}

impl<'x, F: Wire> Results<'x, F> {
    /// Results for `x`, going where `target` says.
    pub fn new(x: &'x Input<F>, target: Target<F>) -> Self {
        match target {
            Target::Framed(framed) => Results::Framed { x, framed },
            Target::Over(reused) => Results::Over { reused, k: x.k },
            Target::Beside => Results::Beside {
                x,
                out: F::pool().take(x.len()),
            },
        }
    }

    /// The input values of `rows` (copied into `scratch` unless they can be
    /// read in place) and the slice their results go to. Blocks must come
    /// from the last towards the first (see [`Reused::block`]).
    pub fn block<'a>(
        &'a mut self,
        rows: Range<usize>,
        scratch: &'a mut Vec<F>,
    ) -> Result<(&'a [F], &'a mut [F]), Error> {
        let span = |k: usize| rows.start * k..rows.end * k;
        match self {
            Results::Framed { x, framed } => {
                let o = framed.values_mut().get_mut(span(x.k));
                let o = o.ok_or_else(|| missing(&rows))?;
                Ok((x.block(rows, scratch)?, o))
            }
            Results::Over { reused, k } => reused.block(span(*k), scratch),
            Results::Beside { x, out } => {
                let o = out.get_mut(span(x.k)).ok_or_else(|| missing(&rows))?;
                Ok((x.block(rows, scratch)?, o))
            }
        }
    }

    /// The results: the encoded response, or the response tensor for `x`.
    pub fn finish(self, x: &Input<F>) -> Reply<Tensor> {
        match self {
            Results::Framed { framed, .. } => Reply::Encoded(framed.finish()),
            Results::Over { reused, .. } => Reply::Message(reused.into_tensor(x.wire_dims())),
            Results::Beside { out, .. } => {
                Reply::Message(to_tensor(x.wire_dims(), out, x.encoding))
            }
        }
    }
}

fn missing(span: &Range<usize>) -> Error {
    Error::Internal(format!("reused buffer: values {span:?} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `v`'s bytes `shift` bytes into a buffer with `room` spare bytes after.
    fn raw_at(v: &[f32], shift: usize, room: usize) -> Bytes {
        let mut b = BytesMut::with_capacity(shift + v.len() * 4 + room);
        b.resize(shift, 0);
        v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
        b.freeze().slice(shift..)
    }

    /// Negates 15 values, 6 at a time, from the last.
    fn negate(mut r: Reused<f32>) -> Vec<f32> {
        let mut scratch = Vec::new();
        for end in [15usize, 9, 3] {
            let (x, out) = r.block(end.saturating_sub(6)..end, &mut scratch).unwrap();
            out.iter_mut().zip(x).for_each(|(o, &v)| *o = -v);
        }
        r.finish()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn results_replace_the_inputs_at_every_alignment() {
        let v: Vec<f32> = (0..15).map(|i| i as f32 + 0.25).collect();
        let want: Vec<f32> = v.iter().map(|x| -x).collect();
        for shift in 0..8 {
            let raw = raw_at(&v, shift, 8);
            let Ok(r) = Reused::<f32>::take(raw) else {
                panic!("shift {shift}: a unique buffer with room is reused");
            };
            assert_eq!(negate(r), want, "shift {shift}");
        }
    }

    #[test]
    fn shared_or_full_buffers_are_given_back() {
        let v = [1.0f32; 8];
        let raw = raw_at(&v, 1, 8);
        let other = raw.clone();
        let back = Reused::<f32>::take(raw).err().expect("shared: given back");
        assert_eq!(back, other);
        // No spare byte after a misaligned tensor: no room to shift it.
        let tight = (0..4)
            .map(|shift| raw_at(&v, shift, 0))
            .find(|b| !(b.as_ptr() as usize).is_multiple_of(4))
            .expect("a misaligned buffer");
        assert!(Reused::<f32>::take(tight).is_err());
    }

    #[test]
    fn blocks_out_of_order_are_refused() {
        let v = [2.0f32; 12];
        let Ok(mut r) = Reused::<f32>::take(raw_at(&v, 3, 8)) else {
            panic!("reusable");
        };
        let mut scratch = Vec::new();
        assert!(r.block(6..12, &mut scratch).is_ok());
        assert!(
            r.block(4..8, &mut scratch).is_err(),
            "overlaps a done block"
        );
        assert!(r.block(0..6, &mut scratch).is_ok());
    }
}
