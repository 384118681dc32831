//! The `softmaxd` binary as a user runs it: flags, the health-check
//! subcommand, and SIGTERM under load answering every call in flight.

use softmaxd::proto::v1::softmax_service_client::SoftmaxServiceClient;
use softmaxd::proto::v1::{ForwardRequest, Tensor};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_softmaxd");

type Logs = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// Starts the binary on an ephemeral loopback port; returns it, its address
/// and its JSON log lines as they arrive.
fn start(extra: &[&str]) -> (Child, String, Logs) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        // Tests run in parallel: the default metrics port 9090 would clash.
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "softmaxd=debug")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn softmaxd");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before serving").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if v["message"] == "softmaxd serving" {
            break v["addr"].as_str().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    let logs = Logs::default();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    (child, addr, logs)
}

fn health_check(addr: &str) -> bool {
    Command::new(BIN)
        .args(["health-check", "--addr", addr, "--timeout", "2"])
        .status()
        .unwrap()
        .success()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "server did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn health_check_subcommand_reflects_the_server() {
    let (mut child, addr, _) = start(&[]);
    assert!(health_check(&addr));
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    assert!(!health_check(&addr), "no server: the probe must fail");
}

#[test]
fn bad_flags_are_refused() {
    let out = Command::new(BIN)
        .args(["--temperature-is-not-a-flag"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(BIN)
        .args(["--http2-max-frame", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http2-max-frame"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_call_in_flight() {
    let (mut child, addr, logs) = start(&["--parallel-threshold", "1000"]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let k = 4096usize;
    let rows = 64usize;
    let x: Vec<f32> = (0..rows * k).map(|i| (i % 97) as f32 * 0.1).collect();
    let req = ForwardRequest {
        logits: Some(Tensor {
            shape: vec![rows as u32, k as u32],
            f32: x,
            ..Default::default()
        }),
        temperature: None,
        log: false,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client =
            SoftmaxServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        let req = req.clone();
        let stop = stop.clone();
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match client.forward(req.clone()).await {
                    Ok(r) => {
                        let out = r.into_inner().output.unwrap().f32;
                        assert_eq!(out.len(), rows * k, "a complete answer");
                        let s: f32 = out[..k].iter().sum();
                        assert!((s - 1.0).abs() < 1e-3);
                        ok += 1;
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(s) => {
                        // After SIGTERM new calls are refused (UNAVAILABLE, or
                        // CANCELLED for one the client queued on the closing
                        // connection); the server-side count below proves none
                        // that the server accepted was cut short.
                        let goaway = format!("{s:?}").contains("GoAway");
                        assert!(
                            matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled)
                                || goaway,
                            "unexpected status {s:?}"
                        );
                        refused += 1;
                        break;
                    }
                }
            }
            (ok, refused)
        }));
    }
    // Signal once the load is flowing (every client has had answers).
    let t0 = std::time::Instant::now();
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 32 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no answers under load"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sigterm(&child);
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(25)))
            .await
            .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(status.success(), "exit status {status:?}");
    let mut total_ok = 0;
    for t in tasks {
        let (ok, _) = t.await.expect("no call saw a wrong or partial answer");
        total_ok += ok;
    }
    assert!(total_ok > 0);
    std::thread::sleep(Duration::from_millis(100));
    let logs = logs.lock().unwrap();
    let server_ok = logs
        .iter()
        .filter(|v| v["message"] == "call completed" && v["span"]["method"] == "Forward")
        .count();
    assert_eq!(
        server_ok, total_ok,
        "every call the server answered reached its client"
    );
    assert!(
        logs.iter().any(|v| v["message"] == "drained, exiting"),
        "the server drained before its deadline"
    );
}
