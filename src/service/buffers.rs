//! Recycled value buffers: large request copies and responses go back to a
//! small per-type pool once sent, so the next call skips the allocator's
//! zero-fill and page faults.
//!
//! A fresh multi-megabyte `vec![0.0; n]` costs a memset or a page fault per
//! 4 KiB page: on Forward [256,4096] that was ~11% of the server's time,
//! more than the softmax itself. Buffers below [`MIN_BYTES`] are cheap to
//! allocate and are never pooled.

use std::sync::Mutex;

/// Smaller buffers come straight from the allocator.
const MIN_BYTES: usize = 64 << 10;
/// At most this many idle buffers per element type.
const MAX_IDLE: usize = 16;
/// At most this many idle bytes per element type: what a burst can leave
/// behind in RSS.
const MAX_IDLE_BYTES: usize = 128 << 20;

/// Idle buffers of one element type.
pub struct Pool<F> {
    idle: Mutex<Vec<Vec<F>>>,
}

impl<F> Pool<F> {
    pub const fn new() -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl<F> Default for Pool<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Copy + Default> Pool<F> {
    /// A vector of `n` values whose contents are unspecified (stale values
    /// of an earlier call, or zeros): callers overwrite every element.
    pub fn take(&self, n: usize) -> Vec<F> {
        if bytes::<F>(n) >= MIN_BYTES {
            if let Some(mut v) = self.best_fit(n) {
                // Only a shorter recycled vector writes (its new tail).
                v.resize(n, F::default());
                return v;
            }
        }
        vec![F::default(); n]
    }

    /// Keeps `v` for a later `take`, unless it is small or larger than the
    /// whole pool. A full pool drops its oldest buffers to make room: the
    /// newest fits the calls being served now, while a pool that refused it
    /// would keep serving nothing but misses once a different workload (a
    /// burst of typed [64,1000] calls before raw [256,4096] ones, say) had
    /// filled it with buffers of the wrong size.
    pub fn give(&self, v: Vec<F>) {
        let size = bytes::<F>(v.capacity());
        if !(MIN_BYTES..=MAX_IDLE_BYTES).contains(&size) {
            return;
        }
        let mut evicted = Vec::new();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(v);
            let mut held: usize = idle.iter().map(|b| bytes::<F>(b.capacity())).sum();
            while idle.len() > MAX_IDLE || held > MAX_IDLE_BYTES {
                let oldest = idle.remove(0);
                held -= bytes::<F>(oldest.capacity());
                evicted.push(oldest);
            }
        }
        // `evicted` is freed here, after the lock is released.
    }

    /// The smallest idle buffer that holds `n` values without wasting more
    /// than half of itself; of equal ones, the last given back, whose bytes
    /// are the likeliest to be still in cache (the input of the call just
    /// finished, or an answer the kernel's TCP stack just read).
    fn best_fit(&self, n: usize) -> Option<Vec<F>> {
        let mut idle = self.idle.lock().ok()?;
        let (i, _) = idle
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| b.capacity() >= n && b.capacity() / 2 <= n)
            .min_by_key(|(_, b)| b.capacity())?;
        // `remove`, not `swap_remove`: `give` evicts from the front, so the
        // idle list must stay in the order buffers came back.
        Some(idle.remove(i))
    }

    /// Number of idle buffers (for tests).
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

fn bytes<F>(n: usize) -> usize {
    n.saturating_mul(std::mem::size_of::<F>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_large_buffers_and_keeps_their_memory() {
        let pool = Pool::<f32>::new();
        let mut v = pool.take(1 << 20);
        v.iter_mut().for_each(|x| *x = 1.0);
        let ptr = v.as_ptr();
        pool.give(v);
        assert_eq!(pool.idle(), 1);
        let w = pool.take((1 << 20) - 5);
        assert_eq!(w.len(), (1 << 20) - 5);
        assert_eq!(w.as_ptr(), ptr, "the idle buffer is reused");
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn grows_a_shorter_buffer_and_skips_small_or_oversized_ones() {
        let pool = Pool::<f64>::new();
        pool.give(vec![7.0; 16]); // small: dropped
        assert_eq!(pool.idle(), 0);
        let mut v = Vec::with_capacity(1 << 20);
        v.resize(1 << 19, 3.0);
        pool.give(v);
        let w = pool.take(1 << 20);
        assert_eq!(w.len(), 1 << 20);
        assert_eq!(w.last(), Some(&0.0), "the new tail is filled");
        pool.give(w);
        // A quarter of the idle buffer would waste three quarters of it.
        let small = pool.take(1 << 18);
        assert_eq!(small.capacity(), 1 << 18);
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn of_equal_buffers_takes_the_last_given_back() {
        let pool = Pool::<f32>::new();
        let (older, newer) = (vec![1.0f32; 1 << 16], vec![2.0f32; 1 << 16]);
        let at = newer.as_ptr();
        pool.give(older);
        pool.give(newer);
        let got = pool.take(1 << 16);
        assert_eq!((got.as_ptr(), got[0]), (at, 2.0), "the warmer one");
    }

    #[test]
    fn bounds_what_it_keeps_and_makes_room_for_the_newest() {
        let pool = Pool::<f32>::new();
        for _ in 0..MAX_IDLE + 4 {
            pool.give(vec![0.0; 1 << 16]);
        }
        assert_eq!(pool.idle(), MAX_IDLE);
        // A full pool of small buffers still takes a large one, which the
        // next large call gets back.
        pool.give(vec![5.0f32; 1 << 20]);
        assert_eq!(pool.idle(), MAX_IDLE);
        // A fresh vector would be zeros (its address might even match).
        assert_eq!(pool.take(1 << 20)[0], 5.0, "the newest is kept");

        let big = Pool::<f32>::new();
        big.give(vec![0.0; 1 << 16]);
        big.give(vec![0.0; MAX_IDLE_BYTES / 4]);
        assert_eq!(big.idle(), 1, "the byte cap is respected");
        assert_eq!(big.take(MAX_IDLE_BYTES / 4).len(), MAX_IDLE_BYTES / 4);
        big.give(vec![0.0; MAX_IDLE_BYTES / 4 + 1]);
        assert_eq!(big.idle(), 0, "larger than the whole pool: not kept");
    }
}
