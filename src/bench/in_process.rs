//! softmaxd and its echo twin served from this process on loopback, with
//! default settings, on a runtime of their own (for `--in-process`).

use crate::server::{self, Config};
use std::net::SocketAddr;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// The two servers; dropping this stops them.
pub struct Servers {
    /// Where softmaxd listens.
    pub softmaxd: SocketAddr,
    /// Where the echo service listens.
    pub echo: SocketAddr,
    stops: Vec<oneshot::Sender<()>>,
    runtime: Option<Runtime>,
}

/// Starts both servers on a runtime of `threads` workers. Call it outside
/// any async context.
pub fn start(threads: usize) -> Result<Servers, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("bench-server")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server runtime: {e}"))?;
    let mut addrs = Vec::new();
    let mut stops = Vec::new();
    for echo in [false, true] {
        let mut config = Config::for_tests();
        config.echo = echo;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(config.listen))
            .map_err(|e| format!("cannot listen on loopback: {e}"))?;
        addrs.push(listener.local_addr().map_err(|e| e.to_string())?);
        let (tx, rx) = oneshot::channel::<()>();
        stops.push(tx);
        runtime.spawn(server::serve(config, listener, async {
            let _ = rx.await;
        }));
    }
    match addrs.as_slice() {
        [softmaxd, echo] => Ok(Servers {
            softmaxd: *softmaxd,
            echo: *echo,
            stops,
            runtime: Some(runtime),
        }),
        _ => Err("the servers did not start".into()),
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}
