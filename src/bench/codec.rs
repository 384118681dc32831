//! A gRPC codec for pre-encoded messages: requests go out as stored bytes,
//! answers are measured and skipped (or kept, to check one of them).

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// An answer as the load tool sees it.
#[derive(Debug)]
pub struct Reply {
    /// Encoded size of the message.
    pub len: usize,
    /// The message itself, when the codec was asked to keep it.
    pub body: Option<Bytes>,
}

/// Sends `Bytes` as they are and reads answers as [`Reply`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Passthrough {
    /// Keep each answer's bytes (for checking), instead of skipping them.
    pub keep: bool,
}

impl Codec for Passthrough {
    type Encode = Bytes;
    type Decode = Reply;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for Passthrough {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Passthrough {
    type Item = Reply;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Reply>, Status> {
        let len = src.remaining();
        let body = if self.keep {
            Some(src.copy_to_bytes(len))
        } else {
            src.advance(len);
            None
        };
        Ok(Some(Reply { len, body }))
    }
}
