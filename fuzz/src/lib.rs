//! Shared by the fuzz targets: the in-process service with small limits, a
//! runtime to drive it, and the checks every answer must pass.

use bytes::Bytes;
use prost::Message;
use softmaxd::proto::v1::Tensor;
use softmaxd::service::{Config, Softmax};
use std::future::Future;
use std::sync::OnceLock;
use tonic::{Code, Status};

/// The message limit of the fuzzed service, small so that a legal but huge
/// shape is refused by the service's size checks instead of exhausting the
/// fuzzer's memory.
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;

/// What the service may answer bad input with (DESIGN.md, error policy).
const DOCUMENTED: [Code; 2] = [Code::InvalidArgument, Code::ResourceExhausted];

/// The service every target calls, built once per process.
pub fn service() -> &'static Softmax {
    static SERVICE: OnceLock<Softmax> = OnceLock::new();
    SERVICE.get_or_init(|| {
        Softmax::new(Config {
            max_message_bytes: MAX_MESSAGE_BYTES,
            // Low, so that inputs reach both the inline and the pool path.
            parallel_threshold: 256,
            // Small, so that one JacobianStream spans several messages.
            stream_chunk_bytes: 4 << 10,
            max_concurrent_requests: 0,
            // Below two full messages, so that the budget check is reached.
            max_inflight_bytes: 384 << 10,
        })
    })
}

/// Drives `f` to completion on this thread's runtime (spawned stream
/// producers run on it too).
pub fn block_on<F: Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|rt| rt.block_on(f))
}

/// Decodes `data` as the server would: nothing over the message limit (the
/// transport refuses it), nothing prost rejects (tonic answers INTERNAL
/// before the service sees it), and from a shared buffer, so that raw
/// `*_le` fields are slices of it at whatever alignment the bytes give.
pub fn request<M: Message + Default>(data: &[u8]) -> Option<M> {
    if data.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    M::decode(Bytes::copy_from_slice(data)).ok()
}

/// Fails the run unless `status` is a documented one with a message.
pub fn check_status(status: &Status) {
    assert!(
        DOCUMENTED.contains(&status.code()),
        "undocumented status {:?}: {}",
        status.code(),
        status.message()
    );
    assert!(
        !status.message().is_empty(),
        "{:?} without a message",
        status.code()
    );
}

/// What a request tensor looked like, to check the answer against.
#[derive(Clone, Debug)]
pub struct Layout {
    pub shape: Vec<u32>,
    /// The field holding its values, if any.
    pub field: Option<&'static str>,
}

impl Layout {
    /// Records `t`'s shape and value field.
    pub fn of(t: &Tensor) -> Self {
        Self {
            shape: t.shape.clone(),
            field: field(t),
        }
    }

    /// Number of vectors: the product of all dims but the last.
    pub fn rows(&self) -> u64 {
        let n = self.shape.len().saturating_sub(1);
        self.shape.iter().take(n).map(|&d| u64::from(d)).product()
    }

    /// The batch dims.
    pub fn batch(&self) -> &[u32] {
        &self.shape[..self.shape.len().saturating_sub(1)]
    }

    /// The softmax axis length.
    pub fn k(&self) -> u32 {
        self.shape.last().copied().unwrap_or(0)
    }
}

fn field(t: &Tensor) -> Option<&'static str> {
    if !t.f32.is_empty() {
        Some("f32")
    } else if !t.f64.is_empty() {
        Some("f64")
    } else if !t.f32_le.is_empty() {
        Some("f32_le")
    } else if !t.f64_le.is_empty() {
        Some("f64_le")
    } else {
        None
    }
}

/// The values of `t` as f64, from whichever field holds them.
pub fn values(t: &Tensor) -> Vec<f64> {
    let mut v: Vec<f64> = t.f32.iter().map(|&x| f64::from(x)).collect();
    v.extend(&t.f64);
    v.extend(
        t.f32_le
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
    );
    v.extend(t.f64_le.chunks_exact(8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        f64::from_le_bytes(a)
    }));
    v
}

/// Asserts that an answer's tensor `what` is there, has `shape` and exactly
/// as many values as it says (no stray bytes), in the same field as the
/// request's primary tensor `like`; returns it.
pub fn check_tensor<'a>(
    what: &str,
    out: Option<&'a Tensor>,
    shape: &[u32],
    like: &Layout,
) -> &'a Tensor {
    let out = out.unwrap_or_else(|| panic!("{what}: missing from an OK answer"));
    assert_eq!(out.shape, shape, "{what}: shape");
    let want: u64 = shape.iter().map(|&d| u64::from(d)).product();
    assert_eq!(out.f32_le.len() % 4, 0, "{what}: f32_le length");
    assert_eq!(out.f64_le.len() % 8, 0, "{what}: f64_le length");
    assert_eq!(values(out).len() as u64, want, "{what}: value count");
    if want > 0 {
        assert_eq!(field(out), like.field, "{what}: dtype or encoding");
    }
    out
}
