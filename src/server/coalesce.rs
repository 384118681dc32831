//! A connection that gathers the small writes of one busy spell into one `writev`.
//!
//! h2 flushes after every DATA frame larger than 256 bytes, because it keeps
//! at most one such payload chained behind its own buffer. A gRPC answer is
//! headers, data, then trailers, so each answer took two `writev`s: the data,
//! then a 10-byte trailers frame on its own. Over loopback each `writev`
//! also runs the peer's TCP receive path, and the two were half of the echo
//! server's CPU on [1,1000] calls. Here small writes are copied into one
//! buffer; the first flush only schedules the connection task again
//! (`wake_by_ref`), and the bytes go out on its next read, its next flush or
//! its next large write, whichever comes first. Answers finished in the
//! meantime, by this or other streams, travel in the same `writev`.
//! Large writes are never copied: they go out behind the buffered bytes in
//! one vectored write.
//!
//! The server gathers only with `--coalesce-writes true`: held-back answers
//! make a closed-loop client idle, and waking it again cost more than the
//! saved `writev`s on one connection (bench/README.md). The load tool
//! gathers its requests by default.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes at most this long are copied; longer ones are sent from the caller's
/// buffers. A [1,1000] f32 answer (4 KB) is copied, a 64 KiB frame is not.
const COPY_LIMIT: usize = 16 * 1024;

/// Once this much waits, a copy first sends what is buffered.
const PENDING_LIMIT: usize = 256 * 1024;

/// A drained buffer keeps at most this much capacity, so that an idle
/// connection does not hold on to the largest spell it ever had.
const KEEP_CAPACITY: usize = 32 * 1024;

/// Vectored writes pass on at most this many of the caller's slices, so
/// that with the buffer in front they stay within the 64 that h2's writer
/// (tokio-util's `poll_write_buf`) gathers itself.
const MAX_SLICES: usize = 63;

/// `inner` with its small writes gathered; see the module doc.
#[derive(Debug)]
pub struct Coalesced<S> {
    inner: S,
    /// Bytes accepted from the caller and not yet written; `pending[sent..]`
    /// is what remains.
    pending: Vec<u8>,
    sent: usize,
    /// A flush found bytes waiting and woke the task instead of writing.
    deferred: bool,
    /// Off: every call goes straight to `inner` (`--coalesce-writes false`).
    enabled: bool,
}

impl<S> Coalesced<S> {
    /// `inner`, with its writes gathered if `enabled`.
    pub fn new(inner: S, enabled: bool) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
            deferred: false,
            enabled,
        }
    }

    fn unsent(&self) -> &[u8] {
        self.pending.get(self.sent..).unwrap_or_default()
    }

    fn advance(&mut self, n: usize) {
        self.sent += n;
        if self.sent >= self.pending.len() {
            self.pending.clear();
            if self.pending.capacity() > KEEP_CAPACITY {
                self.pending = Vec::new();
            }
            self.sent = 0;
            self.deferred = false;
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes every buffered byte, or registers for writability.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.unsent().is_empty() {
            let rest = self.pending.get(self.sent..).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the buffered bytes and then `bufs` in as few `writev`s as the
    /// socket allows; the count returned is of `bufs`' bytes only.
    fn poll_write_behind(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let bufs = bufs.get(..MAX_SLICES).unwrap_or(bufs);
        loop {
            let waiting = self.unsent().len();
            if waiting == 0 {
                return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            }
            // On the stack: this runs for every large frame.
            let mut slices = [IoSlice::new(&[]); MAX_SLICES + 1];
            let mut used = 0;
            let parts = std::iter::once(self.pending.get(self.sent..).unwrap_or_default())
                .chain(bufs.iter().map(|b| &**b));
            for (slot, part) in slices.iter_mut().zip(parts) {
                *slot = IoSlice::new(part);
                used += 1;
            }
            let slices = slices.get(..used).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n.min(waiting));
            if n > waiting {
                return Poll::Ready(Ok(n - waiting));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The task is back: what it left for later goes out now. If the
        // socket is full, its writability wakes this task again.
        if !this.unsent().is_empty() {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len > COPY_LIMIT || !this.enabled {
            return this.poll_write_behind(cx, bufs);
        }
        if this.unsent().len() + len > PENDING_LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        for b in bufs {
            this.pending.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unsent().is_empty() {
            if !this.deferred {
                // Come back once the tasks that are ready have run; their
                // answers join these bytes.
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesced<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// Counts the wakes it gets.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A socket that records each write call, takes at most `limit` bytes a
    /// call, and says it is full every `stall`th call.
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
        limit: Option<usize>,
        stall: Option<usize>,
        calls: usize,
        shut: bool,
    }

    impl Socket {
        fn bytes(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncRead for Socket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            if this.stall.is_some_and(|s| this.calls.is_multiple_of(s)) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut taken: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            taken.truncate(this.limit.unwrap_or(usize::MAX));
            let n = taken.len();
            this.writes.push(taken);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    fn context() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        (wakes, waker)
    }

    fn write(c: &mut Coalesced<Socket>, cx: &mut Context<'_>, bytes: &[u8]) -> usize {
        match Pin::new(c).poll_write(cx, bytes) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("write: {other:?}"),
        }
    }

    fn flush(c: &mut Coalesced<Socket>, cx: &mut Context<'_>) {
        assert!(matches!(Pin::new(c).poll_flush(cx), Poll::Ready(Ok(()))));
    }

    #[test]
    fn small_writes_wait_for_the_second_flush_and_leave_in_one_write() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Socket::default(), true);
        assert_eq!(write(&mut c, &mut cx, b"headers+data"), 12);
        flush(&mut c, &mut cx);
        assert!(c.inner.writes.is_empty(), "the first flush writes nothing");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "but wakes the task");
        assert_eq!(write(&mut c, &mut cx, b"trailers"), 8);
        flush(&mut c, &mut cx);
        assert_eq!(c.inner.writes, vec![b"headers+datatrailers".to_vec()]);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // Nothing waits now: a flush neither writes nor wakes.
        flush(&mut c, &mut cx);
        assert_eq!(c.inner.writes.len(), 1);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn switched_off_every_write_goes_straight_to_the_socket() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Socket::default(), false);
        write(&mut c, &mut cx, b"headers+data");
        write(&mut c, &mut cx, b"trailers");
        assert_eq!(
            c.inner.writes,
            vec![b"headers+data".to_vec(), b"trailers".to_vec()]
        );
        flush(&mut c, &mut cx);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_read_sends_what_a_flush_left_for_later() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Socket::default(), true);
        write(&mut c, &mut cx, b"answer");
        flush(&mut c, &mut cx);
        assert!(c.inner.writes.is_empty());
        let mut space = [0u8; 8];
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut c).poll_read(&mut cx, &mut buf).is_pending());
        assert_eq!(c.inner.writes, vec![b"answer".to_vec()]);
    }

    #[test]
    fn a_large_write_goes_behind_the_buffered_bytes_without_a_copy_of_its_own() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Socket::default(), true);
        write(&mut c, &mut cx, b"head");
        let large = vec![7u8; COPY_LIMIT + 1];
        assert_eq!(write(&mut c, &mut cx, &large), large.len());
        assert_eq!(c.inner.writes.len(), 1, "one vectored write");
        assert_eq!(c.inner.bytes(), [b"head".as_slice(), &large].concat());
        assert!(c.pending.is_empty());
    }

    #[test]
    fn shutdown_sends_the_buffered_bytes_first() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Socket::default(), true);
        write(&mut c, &mut cx, b"goaway");
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.inner.bytes(), b"goaway");
        assert!(c.inner.shut);
    }

    #[test]
    fn the_buffer_is_sent_before_it_grows_past_its_limit() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Socket::default(), true);
        let chunk = vec![1u8; COPY_LIMIT];
        for _ in 0..PENDING_LIMIT / COPY_LIMIT {
            write(&mut c, &mut cx, &chunk);
        }
        assert!(c.inner.writes.is_empty());
        write(&mut c, &mut cx, &chunk);
        assert_eq!(c.inner.bytes().len(), PENDING_LIMIT);
        assert_eq!(c.pending.len(), COPY_LIMIT);
    }

    #[test]
    fn a_drained_buffer_gives_back_a_large_capacity_and_keeps_a_small_one() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Socket::default(), true);
        write(&mut c, &mut cx, &[0u8; 1000]);
        flush(&mut c, &mut cx);
        flush(&mut c, &mut cx);
        assert!(
            c.pending.capacity() >= 1000,
            "a small spell's buffer is kept"
        );
        for _ in 0..4 {
            write(&mut c, &mut cx, &vec![0u8; COPY_LIMIT]);
        }
        flush(&mut c, &mut cx);
        flush(&mut c, &mut cx);
        assert_eq!(c.inner.bytes().len(), 1000 + 4 * COPY_LIMIT);
        assert_eq!(c.pending.capacity(), 0, "a large spell's buffer is freed");
    }

    proptest::proptest! {
        /// Whatever the write sizes, partial writes and full sockets, the
        /// socket gets exactly the bytes written, in order, and each write
        /// reports no more than it was given.
        #[test]
        fn the_socket_gets_every_byte_in_order(
            sizes in proptest::collection::vec(0usize..3 * COPY_LIMIT, 1..40),
            limit in proptest::option::of(1usize..100_000),
            stall in proptest::option::of(2usize..5),
            flush_every in 1usize..4,
        ) {
            let (_, waker) = context();
            let mut cx = Context::from_waker(&waker);
            let mut c = Coalesced::new(Socket { limit, stall, ..Socket::default() }, true);
            let mut expected = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                let data: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
                let mut rest = data.as_slice();
                while !rest.is_empty() {
                    if let Poll::Ready(r) = Pin::new(&mut c).poll_write(&mut cx, rest) {
                        let n = r.map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                        proptest::prop_assert!(n > 0 && n <= rest.len());
                        rest = &rest[n..];
                    }
                }
                expected.extend_from_slice(&data);
                if i % flush_every == 0 {
                    while Pin::new(&mut c).poll_flush(&mut cx).is_pending() {}
                }
            }
            while Pin::new(&mut c).poll_shutdown(&mut cx).is_pending() {}
            proptest::prop_assert_eq!(c.inner.bytes(), expected);
        }
    }
}
