//! A server's CPU time, read from /proc, so a run can report what each call
//! cost the server: steadier than calls/s on a noisy machine.

use std::time::Duration;

/// User plus system CPU time process `pid` (all its threads) has used.
#[cfg(target_os = "linux")]
pub fn used(pid: u32) -> Result<Duration, String> {
    let id = i32::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?;
    let stat = procfs::process::Process::new(id)
        .and_then(|p| p.stat())
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    let ticks = stat.utime.saturating_add(stat.stime);
    let per_s = procfs::ticks_per_second().max(1);
    Ok(Duration::from_secs_f64(ticks as f64 / per_s as f64))
}

#[cfg(not(target_os = "linux"))]
pub fn used(pid: u32) -> Result<Duration, String> {
    Err(format!(
        "the CPU time of pid {pid}: only read on Linux, from /proc"
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process_working() {
        let me = std::process::id();
        let before = used(me).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = used(me).unwrap() - before;
        // Ticks are 10 ms; a busy 300 ms is at least most of that.
        assert!(spent >= Duration::from_millis(200), "{spent:?}");
        assert!(used(u32::MAX).is_err());
    }
}
