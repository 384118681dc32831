//! The one request message of a unary call, read out of its HTTP/2 DATA
//! frames with at most one copy, into recycled memory.
//!
//! tonic's decoder copies every frame into a decode buffer of its own that
//! starts at 8 KiB and grows as frames arrive: for a message over several
//! frames that is a fresh allocation, page faults, and the first frame
//! copied twice. Here a message in one frame (every request smaller than
//! the server's frame size, sent by h2) is decoded where h2 read it, so
//! its `bytes` fields are views of that frame; a longer one is copied once
//! into a buffer of exactly its declared size from a pool. Anything else
//! (compressed, over the limit, malformed, cut short) is replayed, byte for
//! byte, into tonic's decoder, which keeps owning every error message.

use crate::service::buffers::Pool;
use crate::service::PREFIX;
use bytes::Bytes;
use futures::{stream, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use tonic::body::Body;
use tonic::codec::{Codec, Streaming};
use tonic::Status;

/// Buffers of messages that spanned several frames, for the next such call.
static ASSEMBLED: Pool<u8> = Pool::new();

/// What was read from a body before giving up on reading it here, in order.
type Replay = Vec<Result<Frame<Bytes>, Status>>;

/// Decodes the one request message of a unary call of at most `max` bytes.
pub async fn message<Req, Resp>(mut body: Body, max: usize) -> Result<Req, Status>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let replay = match read(&mut body, max).await {
        Ok(message) => return Req::decode(message).map_err(|e| Status::internal(e.to_string())),
        Err(replay) => replay,
    };
    let replayed = Body::new(StreamBody::new(
        stream::iter(replay).chain(BodyStream::new(body)),
    ));
    let decoder = tonic_prost::ProstCodec::<Resp, Req>::default().decoder();
    let mut stream = Streaming::new_request(decoder, replayed, None, Some(max));
    match stream.message().await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(Status::internal("Missing request message.")),
        Err(status) => Err(status),
    }
}

/// The payload of the body's first message, or what was read of the body
/// when that message is not plainly there.
async fn read(body: &mut Body, max: usize) -> Result<Bytes, Replay> {
    let (head, mut chunk) = prefix(body).await?;
    let Some(len) = declared(&head, max) else {
        return Err(replay(&head, b"", Some(Ok(Frame::data(chunk)))));
    };
    if chunk.len() == len {
        return Ok(chunk);
    }
    let mut buf = ASSEMBLED.take(len);
    let mut at = 0usize;
    loop {
        // `at + chunk.len() <= len`: a longer frame carries more than this
        // message, which is tonic's to judge.
        let end = at.saturating_add(chunk.len());
        let Some(dst) = buf.get_mut(at..end) else {
            let copied = buf.get(..at).unwrap_or_default();
            return Err(replay(&head, copied, Some(Ok(Frame::data(chunk)))));
        };
        dst.copy_from_slice(&chunk);
        at = end;
        if at == len {
            return Ok(Bytes::from_owner(Recycled(buf)));
        }
        chunk = match next_data(body).await {
            Ok(data) => data,
            Err(end) => return Err(replay(&head, buf.get(..at).unwrap_or_default(), end)),
        };
    }
}

/// The message's 5-byte prefix and the rest of the frame that completed it.
///
/// The prefix may come in pieces: a client whose flow-control window is
/// nearly spent (hyper reserves one byte before it has more) sends a
/// 1-byte first frame, which must not cost the call its fast path.
async fn prefix(body: &mut Body) -> Result<([u8; PREFIX], Bytes), Replay> {
    let mut head = [0u8; PREFIX];
    let mut have = 0usize;
    loop {
        let data = match next_data(body).await {
            Ok(data) => data,
            Err(end) => return Err(replay(head.get(..have).unwrap_or_default(), b"", end)),
        };
        let take = data.len().min(PREFIX - have);
        if let (Some(dst), Some(src)) = (head.get_mut(have..have + take), data.get(..take)) {
            dst.copy_from_slice(src);
        }
        have += take;
        if have == PREFIX {
            return Ok((head, data.slice(take..)));
        }
    }
}

/// The next DATA frame's bytes, or whatever came instead (trailers, an
/// error, or the end of the body as `None`).
async fn next_data(body: &mut Body) -> Result<Bytes, Option<Result<Frame<Bytes>, Status>>> {
    match body.frame().await {
        Some(Ok(frame)) => frame.into_data().map_err(|f| Some(Ok(f))),
        other => Err(other),
    }
}

/// The length `data` declares for the message it starts, when that message
/// is uncompressed and within `max`.
fn declared(data: &[u8], max: usize) -> Option<usize> {
    let (&head, _) = data.split_first_chunk::<PREFIX>()?;
    let (compressed, len) = crate::service::declared(head);
    (!compressed && len <= max).then_some(len)
}

/// The bytes read so far as frames again: the prefix (or as much of it as
/// came), what was copied, and the frame or event that stopped the copy.
fn replay(head: &[u8], copied: &[u8], stop: Option<Result<Frame<Bytes>, Status>>) -> Replay {
    let mut frames: Replay = [head, copied]
        .into_iter()
        .filter(|b| !b.is_empty())
        .map(|b| Ok(Frame::data(Bytes::copy_from_slice(b))))
        .collect();
    frames.extend(stop);
    frames
}

/// An assembled message's buffer, back to the pool once the request's last
/// view of it is dropped.
struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        ASSEMBLED.give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frames: Vec<Bytes>) -> Body {
        Body::new(StreamBody::new(stream::iter(
            frames.into_iter().map(|b| Ok::<_, Status>(Frame::data(b))),
        )))
    }

    fn message_of(payload: &[u8], flag: u8) -> Vec<u8> {
        let mut m = vec![flag];
        m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn cut(bytes: &[u8], at: &[usize]) -> Vec<Bytes> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(at);
        bounds.push(bytes.len());
        bounds
            .windows(2)
            .map(|w| Bytes::copy_from_slice(&bytes[w[0]..w[1]]))
            .collect()
    }

    fn read_now(frames: Vec<Bytes>, max: usize) -> Result<Bytes, Replay> {
        futures::executor::block_on(read(&mut body(frames), max))
    }

    /// The bytes tonic's decoder would see: the replay, then the rest.
    fn replayed(frames: Vec<Bytes>, max: usize) -> Vec<u8> {
        let mut body = body(frames);
        let replay = futures::executor::block_on(read(&mut body, max)).expect_err("replayed");
        let rest: Vec<_> = futures::executor::block_on(StreamExt::collect(BodyStream::new(body)));
        replay
            .into_iter()
            .chain(rest)
            .flat_map(|f| f.unwrap().into_data().unwrap().to_vec())
            .collect()
    }

    #[test]
    fn one_frame_is_a_view_and_several_are_assembled() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let m = message_of(&payload, 0);
        let whole = Bytes::from(m.clone());
        let got = read_now(vec![whole.clone()], 1 << 20).unwrap();
        assert_eq!(got, payload[..]);
        assert_eq!(got.as_ptr(), whole[PREFIX..].as_ptr(), "no copy");
        for at in [&[5][..], &[7], &[5, 6, 100_000], &[6, 190_000, 200_004]] {
            let got = read_now(cut(&m, at), 1 << 20).unwrap();
            assert_eq!(got, payload[..], "cut at {at:?}");
        }
        // The prefix in pieces, as a client short of window sends it: the
        // rest of the message in one frame is still a view of that frame.
        for at in [&[1][..], &[1, 2, 3, 4], &[3]] {
            let frames = cut(&m, at);
            let last = frames.last().unwrap().clone();
            let got = read_now(frames, 1 << 20).unwrap();
            assert_eq!(got, payload[..], "prefix cut at {at:?}");
            assert_eq!(
                got.as_ptr(),
                last[last.len() - payload.len()..].as_ptr(),
                "no copy"
            );
        }
        let got = read_now(cut(&m, &[1, 3, 90_000]), 1 << 20).unwrap();
        assert_eq!(got, payload[..], "prefix in pieces, then assembled");
    }

    #[test]
    fn anything_else_is_replayed_byte_for_byte() {
        let payload = vec![7u8; 1000];
        let good = message_of(&payload, 0);
        let mut long = good.clone();
        long.extend_from_slice(&[1, 2, 3]);
        let cases = [
            ("compressed", message_of(&payload, 1), 1 << 20),
            ("over the limit", good.clone(), 999),
            ("cut short", good[..good.len() - 1].to_vec(), 1 << 20),
            ("more than one message", long, 1 << 20),
        ];
        for (what, bytes, max) in cases {
            for at in [
                &[][..],
                &[1],
                &[2],
                &[1, 3],
                &[5],
                &[5, 600],
                &[1, 2, 3, 4, 600],
            ] {
                assert_eq!(
                    replayed(cut(&bytes, at), max),
                    bytes,
                    "{what} cut at {at:?}"
                );
            }
        }
        assert!(read_now(Vec::new(), 1 << 20).unwrap_err().is_empty());
    }
}
