//! Shared by the client suites: the server under test and the shared vectors.
#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};
use serde_json::Value;
use softmaxd::client::{Client, ClientOptions, Float};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The softmaxd under test: `SOFTMAX_ADDR` when set, else this build's
/// `softmaxd` binary (the release one under `cargo test --release`) started on
/// a free loopback port and killed on drop.
pub struct Server {
    pub addr: String,
    child: Option<Child>,
}

impl Server {
    pub async fn start() -> Server {
        if let Ok(addr) = std::env::var("SOFTMAX_ADDR") {
            if !addr.is_empty() {
                return Server { addr, child: None };
            }
        }
        Server::start_own().await
    }

    /// This build's softmaxd on a free loopback port, whatever SOFTMAX_ADDR says.
    pub async fn start_own() -> Server {
        // Port 0: the server picks its own port and logs it. A port picked
        // here and handed over could be handed to a parallel test too; the
        // loser would then quietly test the winner's server until it stops.
        let mut server = Server {
            addr: "127.0.0.1:0".to_string(),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// Kills the server at once (SIGKILL: no drain, connections reset).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the binary on `self.addr` (port 0 on the first start: the
    /// server's choice, kept for restarts) and waits until it answers.
    pub async fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_softmaxd"))
            .args(["--listen", &self.addr, "--metrics-listen", ""])
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start softmaxd");
        let serving = serving_addr(child.stderr.take().expect("stderr is piped"));
        self.child = Some(child);
        let addr =
            tokio::task::spawn_blocking(move || serving.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap();
        match addr {
            Ok(addr) => self.addr = addr,
            Err(e) => panic!("softmaxd did not say it serves on {}: {e}", self.addr),
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Client::connect(&self.addr).await.is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "softmaxd did not start on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(&self) -> Client {
        self.client_with(ClientOptions {
            timeout: Some(Duration::from_secs(300)),
            ..ClientOptions::default()
        })
        .await
    }

    pub async fn client_with(&self, options: ClientOptions) -> Client {
        Client::connect_with(&self.addr, options)
            .await
            .expect("connect")
    }
}

/// The address of the server's "softmaxd serving" log line, read from its
/// stderr (which a thread then drains until the server exits).
fn serving_addr(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["message"] == "softmaxd serving" {
                if let Some(addr) = event["addr"].as_str() {
                    let _ = tx.send(addr.to_string());
                }
            }
        }
    });
    rx
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// f32 and f64 as the tests need them.
pub trait TestFloat: Float + Into<f64> + std::fmt::Debug {
    const DTYPE: &'static str;
    fn of(v: f64) -> Self;
}

impl TestFloat for f32 {
    const DTYPE: &'static str = "f32";
    fn of(v: f64) -> Self {
        v as f32
    }
}

impl TestFloat for f64 {
    const DTYPE: &'static str = "f64";
    fn of(v: f64) -> Self {
        v
    }
}

pub fn vectors(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

pub fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) => match s.as_str() {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            other => panic!("bad number {other}"),
        },
        other => other.as_f64().unwrap(),
    }
}

pub fn shape(t: &Value) -> Vec<usize> {
    t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

pub fn values(t: &Value) -> Vec<f64> {
    let n: usize = shape(t).iter().product();
    match t.get("fill") {
        Some(fill) => vec![number(fill); n],
        None => t["values"].as_array().unwrap().iter().map(number).collect(),
    }
}

pub fn array<T: TestFloat>(t: &Value) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(&shape(t)), values(t).into_iter().map(T::of).collect()).unwrap()
}

/// Checks `got` against `want` within the file's tolerance for `T`; returns the first problem.
pub fn close<T: TestFloat>(got: &ArrayD<T>, want: &Value, tol: &Value) -> Result<(), String> {
    let (atol, rtol) = (tol["atol"].as_f64().unwrap(), tol["rtol"].as_f64().unwrap());
    if got.shape() != shape(want).as_slice() {
        return Err(format!("shape {:?} != {:?}", got.shape(), shape(want)));
    }
    for (i, (g, w)) in got.iter().zip(values(want)).enumerate() {
        let g: f64 = (*g).into();
        let ok = if w.is_finite() {
            (g - w).abs() <= atol + rtol * w.abs()
        } else {
            g == w
        };
        if !ok {
            return Err(format!("[{i}]: got {g}, want {w}"));
        }
    }
    Ok(())
}
