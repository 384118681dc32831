//! Pre-encoded requests, and a gRPC codec that sends them as stored bytes
//! and measures answers and skips them (or keeps them, to check one).

use crate::service::{prefix, PREFIX};
use bytes::{Buf, BufMut, Bytes, BytesMut};
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

/// A request encoded once as it goes on the wire: gRPC's 5-byte prefix
/// (uncompressed, big-endian length), then the protobuf message.
#[derive(Clone, Debug)]
pub struct Prefixed(Bytes);

impl Prefixed {
    /// The encoded `message` behind its prefix; `None` past gRPC's 4 GiB.
    pub fn new(message: &[u8]) -> Option<Self> {
        let head = prefix(message.len())?;
        let mut buf = BytesMut::with_capacity(PREFIX + message.len());
        buf.put_slice(&head);
        buf.put_slice(message);
        Some(Self(buf.freeze()))
    }

    /// Prefix and message, as sent.
    pub fn wire(&self) -> Bytes {
        self.0.clone()
    }

    /// The message alone, for tonic's codec (which adds the prefix).
    pub fn message(&self) -> Bytes {
        self.0.slice(PREFIX..)
    }

    /// The message's size in bytes.
    pub fn message_len(&self) -> usize {
        self.0.len().saturating_sub(PREFIX)
    }
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
