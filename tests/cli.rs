//! The `softmaxd` binary as a user runs it: flags, the health-check
//! subcommand, and SIGTERM under load answering every call in flight.

mod harness;

use harness::reference::{jacobian, max_abs_diff, per_row, softmax, values};
use harness::watch_health;
use harness::wire::{expect, tensor, Kind};
use softmaxd::proto::v1::softmax_service_client::SoftmaxServiceClient;
use softmaxd::proto::v1::{ForwardRequest, JacobianRequest, JacobianResponse};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;

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

/// JacobianStreams held open across SIGTERM: their clients read only the
/// first message before the signal, and small client flow-control windows keep
/// the rest on the server, so all of them are mid-call when the signal lands.
const STREAMS: usize = 64;
/// Vectors per stream (one per message) and their length.
const STREAM_ROWS: usize = 64;
const STREAM_K: usize = 32;
/// Unary Forward callers looping across the signal.
const CALLERS: usize = 16;
const CALL_ROWS: usize = 64;
const CALL_K: usize = 1024;
const DRAIN_S: u64 = 10;

/// A stream task: opens a JacobianStream, reads one message, reports ready,
/// waits for `release`, then checks a new call is refused and reads the rest,
/// comparing every value with the f64 reference.
async fn held_stream(
    mut client: SoftmaxServiceClient<Channel>,
    seed: u64,
    ready: tokio::sync::mpsc::Sender<()>,
    mut release: tokio::sync::watch::Receiver<bool>,
) {
    let x = Kind::F32Raw.round(&values(STREAM_ROWS * STREAM_K, seed, -4.0, 4.0));
    let req = JacobianRequest {
        logits: Some(tensor(
            &[STREAM_ROWS as u32, STREAM_K as u32],
            &x,
            Kind::F32Raw,
        )),
        output: None,
        temperature: None,
        log: false,
    };
    let mut stream = client.jacobian_stream(req).await.unwrap().into_inner();
    // Checks one message against the reference; returns the vectors it held.
    let check = |msg: JacobianResponse, first: usize| {
        assert_eq!(msg.first_row, first as u64, "messages in order");
        let n = msg.jacobian.as_ref().map_or(0, |t| t.shape[0] as usize);
        let got = expect(
            msg.jacobian,
            &[n as u32, STREAM_K as u32, STREAM_K as u32],
            Kind::F32Raw,
        );
        let rows = &x[first * STREAM_K..(first + n) * STREAM_K];
        let want = per_row(rows, STREAM_K, |v| jacobian(v, 1.0, false));
        assert!(max_abs_diff(&got, &want) < Kind::F32Raw.tol());
        n
    };
    let first = stream.message().await.unwrap().expect("a first message");
    let mut next_row = check(first, 0);
    ready.send(()).await.unwrap();
    release.wait_for(|&r| r).await.unwrap();
    // The server is draining and this stream keeps it from finishing: a new
    // call reaches it and must be refused, not queued or cut.
    let refused = client
        .forward(ForwardRequest {
            logits: Some(tensor(&[2], &[1.0, 2.0], Kind::F32Typed)),
            temperature: None,
            log: false,
        })
        .await
        .expect_err("a new call while draining is refused");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    loop {
        match stream.message().await {
            Ok(Some(msg)) => next_row += check(msg, next_row),
            Ok(None) => break,
            Err(s) => panic!("stream {seed} cut after {next_row} vectors: {s:?}"),
        }
    }
    assert_eq!(next_row, STREAM_ROWS, "every vector of the stream arrived");
}

/// A caller task: Forward on a fixed batch until the first refusal, checking
/// every answer with the f64 reference; returns the answers it got.
async fn looping_caller(
    mut client: SoftmaxServiceClient<Channel>,
    seed: u64,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> usize {
    let x = Kind::F32Raw.round(&values(CALL_ROWS * CALL_K, seed, -6.0, 6.0));
    let want = per_row(&x, CALL_K, |v| softmax(v, 1.0));
    let req = ForwardRequest {
        logits: Some(tensor(&[CALL_ROWS as u32, CALL_K as u32], &x, Kind::F32Raw)),
        temperature: None,
        log: false,
    };
    let mut ok = 0;
    loop {
        match client.forward(req.clone()).await {
            Ok(r) => {
                let got = expect(
                    r.into_inner().output,
                    &[CALL_ROWS as u32, CALL_K as u32],
                    Kind::F32Raw,
                );
                assert!(max_abs_diff(&got, &want) < Kind::F32Raw.tol());
                ok += 1;
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Err(s) => {
                // Streams still in flight keep the server draining (not yet
                // closing connections), so the refusal is the service's own.
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                assert!(ok > 0);
                return ok;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_64_calls_in_flight_answers_them_and_refuses_new_ones() {
    let drain = Duration::from_secs(DRAIN_S);
    let (mut child, addr, logs) = start(&[
        "--drain-timeout",
        &DRAIN_S.to_string(),
        "--stream-chunk-bytes",
        &(STREAM_K * STREAM_K * 4).to_string(),
    ]);
    let uri = format!("http://{addr}");
    let connect = |window: u32| {
        let endpoint = Endpoint::from_shared(uri.clone())
            .unwrap()
            .initial_stream_window_size(window)
            .initial_connection_window_size(window.saturating_mul(16));
        async move { endpoint.connect().await.unwrap() }
    };

    let mut watch = watch_health(connect(1 << 20).await).await;

    // Eight streams per connection, each window a quarter of a stream.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(STREAMS);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut streams = Vec::new();
    for c in 0..STREAMS / 8 {
        let channel = connect(16 << 10).await;
        for i in 0..8 {
            streams.push(tokio::spawn(held_stream(
                SoftmaxServiceClient::new(channel.clone()),
                (c * 8 + i) as u64,
                ready_tx.clone(),
                release_rx.clone(),
            )));
        }
    }
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut callers = Vec::new();
    let call_channel = connect(4 << 20).await;
    for i in 0..CALLERS {
        let client =
            SoftmaxServiceClient::new(call_channel.clone()).max_decoding_message_size(64 << 20);
        callers.push(tokio::spawn(looping_caller(
            client,
            1000 + i as u64,
            answered.clone(),
        )));
    }
    for _ in 0..STREAMS {
        ready_rx.recv().await.expect("every stream started");
    }
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 2 * CALLERS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    sigterm(&child);
    let signalled = std::time::Instant::now();
    let flipped = watch.message().await.unwrap().unwrap().status;
    assert_eq!(
        flipped,
        ServingStatus::NotServing as i32,
        "health flips first"
    );
    let mut forward_ok = 0;
    for c in callers {
        forward_ok += c.await.expect("every Forward answer was correct");
    }
    release_tx.send(true).unwrap();
    for s in streams {
        s.await
            .expect("every stream delivered correct, complete answers");
    }
    let left = drain.saturating_sub(signalled.elapsed());
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, left))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        matches!(watch.message().await, Ok(None)),
        "the health watch ends cleanly at shutdown"
    );
    // With the listener closed, a new call fails to connect: UNAVAILABLE too.
    let after = SoftmaxServiceClient::new(Endpoint::from_shared(uri).unwrap().connect_lazy())
        .forward(ForwardRequest::default())
        .await
        .expect_err("no server");
    assert_eq!(after.code(), tonic::Code::Unavailable, "{after:?}");

    std::thread::sleep(Duration::from_millis(100));
    let logs = logs.lock().unwrap();
    let completed = |method: &str| {
        logs.iter()
            .filter(|v| v["message"] == "call completed" && v["span"]["method"] == method)
            .count()
    };
    assert_eq!(
        completed("Forward"),
        forward_ok,
        "every Forward the server answered reached its client"
    );
    assert_eq!(completed("JacobianStream"), STREAMS);
    assert!(
        logs.iter().any(|v| v["message"] == "drained, exiting"),
        "the server drained before its deadline"
    );
}
