//! Request messages read out of their HTTP/2 DATA frames with at most one
//! copy each, into recycled memory: the one message of a unary call, or
//! the messages of a stream, in order.
//!
//! tonic's decoder copies every frame into a decode buffer of its own that
//! starts at 8 KiB and grows as frames arrive: for a message over several
//! frames that is a fresh allocation, page faults, and the first frame
//! copied twice. Here a message within one frame (every request smaller than
//! the server's frame size, sent by h2) is decoded where h2 read it, so
//! its `bytes` fields are views of that frame; a longer one is copied once
//! into a buffer of exactly its declared size from a pool. Anything else
//! (compressed, over the limit, malformed, cut short) is replayed, byte for
//! byte, into tonic's decoder, which keeps owning every error message; a
//! stream's later messages then come from that decoder too.

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
    let replay = match read(&mut body, &mut None, max, Trailing::Refused).await {
        Ok(Some(message)) => return decode(message),
        Ok(None) => Vec::new(),
        Err(replay) => replay,
    };
    let mut stream = tonic_decoder::<Req, Resp>(replay, body, max);
    match stream.message().await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(Status::internal("Missing request message.")),
        Err(status) => Err(status),
    }
}

/// The request messages of a streaming call, read one at a time.
pub struct Messages<Req> {
    source: Source<Req>,
    max: usize,
}

/// Where a stream's next message comes from.
enum Source<Req> {
    /// The body, after what the last message's frame left over.
    Frames { body: Body, rest: Option<Bytes> },
    /// tonic's decoder, since a message that was not plainly there.
    Tonic(Streaming<Req>),
}

impl<Req: prost::Message + Default + Send + 'static> Messages<Req> {
    /// The messages of `body`, each of at most `max` bytes.
    pub fn new(body: Body, max: usize) -> Self {
        Self {
            source: Source::Frames { body, rest: None },
            max,
        }
    }

    /// The next message, `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Req>, Status> {
        let (body, replay) = match &mut self.source {
            Source::Tonic(stream) => return stream.message().await,
            Source::Frames { body, rest } => match read(body, rest, self.max, Trailing::Kept).await
            {
                Ok(Some(message)) => return decode(message).map(Some),
                Ok(None) => return Ok(None),
                Err(replay) => (std::mem::replace(body, Body::empty()), replay),
            },
        };
        let mut stream = tonic_decoder::<Req, Req>(replay, body, self.max);
        let next = stream.message().await;
        self.source = Source::Tonic(stream);
        next
    }
}

/// A message read here, decoded as tonic's decoder would report a failure.
fn decode<Req: prost::Message + Default>(message: Bytes) -> Result<Req, Status> {
    Req::decode(message).map_err(|e| Status::internal(e.to_string()))
}

/// tonic's decoder over `replay` and then the rest of `body`.
fn tonic_decoder<Req, Resp>(replay: Replay, body: Body, max: usize) -> Streaming<Req>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let replayed = Body::new(StreamBody::new(
        stream::iter(replay).chain(BodyStream::new(body)),
    ));
    let decoder = tonic_prost::ProstCodec::<Resp, Req>::default().decoder();
    Streaming::new_request(decoder, replayed, None, Some(max))
}

/// What a message's last frame may carry after it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trailing {
    /// Nothing: a unary call has one message, and more is tonic's to judge.
    Refused,
    /// The start of the next message of a stream.
    Kept,
}

/// The payload of the next message (starting with `rest`, what the last
/// message's frame left over, then the body), `None` when the body ends
/// first, or what was read when that message is not plainly there.
async fn read(
    body: &mut Body,
    rest: &mut Option<Bytes>,
    max: usize,
    trailing: Trailing,
) -> Result<Option<Bytes>, Replay> {
    let Some((head, mut chunk)) = prefix(body, rest).await? else {
        return Ok(None);
    };
    let Some(len) = declared(&head, max) else {
        return Err(replay(&head, b"", Some(Ok(Frame::data(chunk)))));
    };
    let whole = match trailing {
        Trailing::Refused => chunk.len() == len,
        Trailing::Kept => chunk.len() >= len,
    };
    if whole {
        let next = chunk.split_off(len);
        *rest = Some(next).filter(|b| !b.is_empty());
        return Ok(Some(chunk));
    }
    let mut buf = ASSEMBLED.take(len);
    let mut at = 0usize;
    loop {
        let take = match trailing {
            Trailing::Refused => chunk.len(),
            Trailing::Kept => chunk.len().min(len - at),
        };
        // `at + take <= len`: a longer frame of a unary call carries more
        // than its message, which is tonic's to judge.
        let end = at.saturating_add(take);
        let (Some(dst), Some(src)) = (buf.get_mut(at..end), chunk.get(..take)) else {
            let copied = buf.get(..at).unwrap_or_default();
            return Err(replay(&head, copied, Some(Ok(Frame::data(chunk)))));
        };
        dst.copy_from_slice(src);
        at = end;
        if at == len {
            *rest = Some(chunk.split_off(take)).filter(|b| !b.is_empty());
            return Ok(Some(Bytes::from_owner(Recycled(buf))));
        }
        chunk = match next_data(body, rest).await {
            Ok(data) => data,
            Err(end) => return Err(replay(&head, buf.get(..at).unwrap_or_default(), end)),
        };
    }
}

/// The message's 5-byte prefix and the rest of the frame that completed it,
/// or `None` when the body ends cleanly before a message starts.
///
/// The prefix may come in pieces: a client whose flow-control window is
/// nearly spent (hyper reserves one byte before it has more) sends a
/// 1-byte first frame, which must not cost the call its fast path.
async fn prefix(
    body: &mut Body,
    rest: &mut Option<Bytes>,
) -> Result<Option<([u8; PREFIX], Bytes)>, Replay> {
    let mut head = [0u8; PREFIX];
    let mut have = 0usize;
    loop {
        let data = match next_data(body, rest).await {
            Ok(data) => data,
            Err(None) if have == 0 => return Ok(None),
            Err(end) => return Err(replay(head.get(..have).unwrap_or_default(), b"", end)),
        };
        let take = data.len().min(PREFIX - have);
        if let (Some(dst), Some(src)) = (head.get_mut(have..have + take), data.get(..take)) {
            dst.copy_from_slice(src);
        }
        have += take;
        if have == PREFIX {
            return Ok(Some((head, data.slice(take..))));
        }
    }
}

/// The bytes left over from the last message's frame, else the next DATA
/// frame's, or whatever came instead (trailers, an error, or the end of the
/// body as `None`).
async fn next_data(
    body: &mut Body,
    rest: &mut Option<Bytes>,
) -> Result<Bytes, Option<Result<Frame<Bytes>, Status>>> {
    if let Some(data) = rest.take() {
        return Ok(data);
    }
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

    fn read_now(frames: Vec<Bytes>, max: usize) -> Result<Option<Bytes>, Replay> {
        let mut rest = None;
        futures::executor::block_on(read(&mut body(frames), &mut rest, max, Trailing::Refused))
    }

    /// The bytes tonic's decoder would see: the replay, then the rest.
    fn replayed(frames: Vec<Bytes>, max: usize) -> Vec<u8> {
        let mut body = body(frames);
        let replay =
            futures::executor::block_on(read(&mut body, &mut None, max, Trailing::Refused))
                .expect_err("replayed");
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
        let got = read_now(vec![whole.clone()], 1 << 20).unwrap().unwrap();
        assert_eq!(got, payload[..]);
        assert_eq!(got.as_ptr(), whole[PREFIX..].as_ptr(), "no copy");
        for at in [&[5][..], &[7], &[5, 6, 100_000], &[6, 190_000, 200_004]] {
            let got = read_now(cut(&m, at), 1 << 20).unwrap().unwrap();
            assert_eq!(got, payload[..], "cut at {at:?}");
        }
        // The prefix in pieces, as a client short of window sends it: the
        // rest of the message in one frame is still a view of that frame.
        for at in [&[1][..], &[1, 2, 3, 4], &[3]] {
            let frames = cut(&m, at);
            let last = frames.last().unwrap().clone();
            let got = read_now(frames, 1 << 20).unwrap().unwrap();
            assert_eq!(got, payload[..], "prefix cut at {at:?}");
            assert_eq!(
                got.as_ptr(),
                last[last.len() - payload.len()..].as_ptr(),
                "no copy"
            );
        }
        let got = read_now(cut(&m, &[1, 3, 90_000]), 1 << 20)
            .unwrap()
            .unwrap();
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
        assert!(read_now(Vec::new(), 1 << 20).unwrap().is_none());
    }

    /// The messages of a stream cut into `frames`, decoded to their end or
    /// to their first error.
    fn stream_of(frames: Vec<Bytes>, max: usize) -> Vec<Result<Vec<u32>, tonic::Code>> {
        let mut messages = Messages::<Shape>::new(body(frames), max);
        let mut got = Vec::new();
        futures::executor::block_on(async {
            loop {
                match messages.next().await {
                    Ok(Some(m)) => got.push(Ok(m.dims)),
                    Ok(None) => break,
                    Err(status) => {
                        got.push(Err(status.code()));
                        break;
                    }
                }
            }
        });
        got
    }

    /// A message of one repeated field, to tell messages apart by.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Shape {
        #[prost(uint32, repeated, tag = "1")]
        dims: Vec<u32>,
    }

    fn shape_message(n: u32) -> Vec<u8> {
        let dims: Vec<u32> = (0..n).map(|i| i * 7 + n).collect();
        message_of(&prost::Message::encode_to_vec(&Shape { dims }), 0)
    }

    #[test]
    fn a_stream_is_read_message_by_message_however_it_is_cut() {
        let sizes = [1u32, 3, 40_000, 2, 0, 25_000, 5];
        let want: Vec<_> = sizes
            .iter()
            .map(|&n| Ok((0..n).map(|i| i * 7 + n).collect::<Vec<u32>>()))
            .collect();
        let bytes: Vec<u8> = sizes.iter().flat_map(|&n| shape_message(n)).collect();
        let len = bytes.len();
        let cuts: Vec<Vec<usize>> = vec![
            vec![],
            (1..len).step_by(1000).collect(),
            (1..len).step_by(4093).collect(),
            vec![1, 2, 3, 4, 5, 6, 7],
            vec![len / 3, len / 2, len - 1],
            (1..40).collect(),
        ];
        for at in cuts {
            assert_eq!(stream_of(cut(&bytes, &at), 1 << 20), want, "cut at {at:?}");
        }
        assert!(stream_of(Vec::new(), 1 << 20).is_empty(), "no messages");
    }

    #[test]
    fn a_stream_message_not_plainly_there_is_tonics_to_judge() {
        let (one, two) = (shape_message(3), shape_message(1000));
        let ok = |n: u32| Ok((0..n).map(|i| i * 7 + n).collect::<Vec<u32>>());
        let mut compressed = one.clone();
        compressed.extend_from_slice(&message_of(&[7u8; 1000], 1));
        let mut short = one.clone();
        short.extend_from_slice(&two[..two.len() - 1]);
        let mut long = one.clone();
        long.extend_from_slice(&two);
        let cases = [
            ("compressed", compressed, 1 << 20),
            ("cut short", short, 1 << 20),
            ("over the limit", long, 100),
        ];
        for (what, bytes, max) in cases {
            for at in [
                vec![],
                vec![one.len()],
                vec![2, one.len() + 3],
                vec![one.len() + 600],
            ] {
                let got = stream_of(cut(&bytes, &at), max);
                assert_eq!(got.len(), 2, "{what} cut at {at:?}: {got:?}");
                assert_eq!(got[0], ok(3), "{what}: the first message stands");
                assert!(got[1].is_err(), "{what} cut at {at:?}: {got:?}");
            }
        }
    }
}
