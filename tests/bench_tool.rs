//! softmaxd-bench: bounded runs against in-process servers, checked through
//! its JSON report (counts, no errors, ordered percentiles).

mod harness;

use clap::Parser;
use harness::TestServer;
use serde_json::Value;
use softmaxd::bench::{self, BenchArgs, Output, Target};
use std::process::Command;

/// Every RPC, as `--rpc` names it.
const RPCS: [&str; 6] = [
    "forward",
    "backward",
    "jacobian",
    "jacobian-stream",
    "forward-stream",
    "cross-entropy",
];

fn percentiles_ordered(report: &Value) {
    let l = &report["latency_us"];
    let p: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| {
            l[*k]
                .as_f64()
                .unwrap_or_else(|| panic!("{k} missing in {l}"))
        })
        .collect();
    assert!(p[0] > 0.0, "{l}");
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "not ordered: {l}");
}

fn no_errors(report: &Value) {
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
}

#[test]
fn the_binary_compares_in_process_servers_and_prints_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_softmaxd-bench"))
        .args([
            "--in-process",
            "--requests",
            "200",
            "--concurrency",
            "4",
            "--warmup",
            "0.1",
            "--shape",
            "4,100",
            "--encoding",
            "typed",
            "--json",
        ])
        .output()
        .expect("run softmaxd-bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    for side in ["softmaxd", "echo"] {
        let r = &v[side];
        assert_eq!(r["calls"], 200, "{r}");
        assert_eq!(r["rpc"], "forward");
        assert_eq!(r["shape"], serde_json::json!([4, 100]));
        assert_eq!(r["encoding"], "typed");
        no_errors(r);
        percentiles_ordered(r);
        assert!(r["calls_per_s"].as_f64().unwrap_or(0.0) > 0.0);
        assert!(r["mb_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    }
    assert!(v["ratio"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
}

async fn run_against(server: &TestServer, flags: &[&str]) -> Value {
    let addr = server.addr.to_string();
    let mut argv = vec!["softmaxd-bench", "--addr", &addr, "--warmup", "0"];
    argv.extend_from_slice(flags);
    let args = BenchArgs::parse_from(argv);
    let target = Target {
        label: "test".into(),
        addr: addr.clone(),
    };
    let out = bench::execute(&args, &target, None)
        .await
        .expect("the run completes");
    assert!(matches!(out, Output::Single(_)));
    serde_json::to_value(&out).expect("serialisable")
}

#[tokio::test]
async fn every_rpc_runs_to_its_request_count() {
    let server = TestServer::start().await;
    for rpc in RPCS {
        // The tool's writes gathered (its default) for f32, not for f64.
        for (dtype, gather) in [("f32", "true"), ("f64", "false")] {
            let r = run_against(
                &server,
                &[
                    "--rpc",
                    rpc,
                    "--dtype",
                    dtype,
                    "--shape",
                    "3,2,16",
                    "--requests",
                    "30",
                    "--concurrency",
                    "3",
                    "--coalesce-writes",
                    gather,
                ],
            )
            .await;
            assert_eq!(r["calls"], 30, "{rpc} {dtype}: {r}");
            assert_eq!(r["rpc"], rpc);
            no_errors(&r);
            percentiles_ordered(&r);
        }
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn fixed_rate_mode_keeps_to_its_schedule_and_bound() {
    let server = TestServer::start().await;
    // 40 calls at 400/s: a tenth of a second of schedule.
    let r = run_against(
        &server,
        &[
            "--rate",
            "400",
            "--requests",
            "40",
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--shape",
            "8,64",
        ],
    )
    .await;
    assert_eq!(r["mode"], "open");
    assert_eq!(r["calls"], 40);
    assert_eq!(r["connections"], 2);
    no_errors(&r);
    percentiles_ordered(&r);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_server_failing_the_first_call_is_not_measured() {
    // A message limit below the payload: the first call already fails, and
    // the tool refuses to measure a server that does not answer correctly.
    let mut config = softmaxd::server::Config::for_tests();
    config.max_message_bytes = 1024;
    let server = TestServer::start_with(config).await;
    let args = BenchArgs::parse_from([
        "softmaxd-bench",
        "--addr",
        &server.addr.to_string(),
        "--requests",
        "5",
        "--shape",
        "4,1000",
    ]);
    let target = Target {
        label: "test".into(),
        addr: server.addr.to_string(),
    };
    let err = bench::execute(&args, &target, None)
        .await
        .expect_err("the first call fails");
    assert!(err.contains("RESOURCE_EXHAUSTED"), "{err}");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn invalid_fraction_spoils_that_share_of_calls_and_expects_invalid_argument() {
    let server = TestServer::start().await;
    for rpc in RPCS {
        for encoding in ["raw", "typed"] {
            // Measured calls are numbered from 0: with 0.5, every second one
            // is invalid, taking the three ways in turn.
            let r = run_against(
                &server,
                &[
                    "--rpc",
                    rpc,
                    "--encoding",
                    encoding,
                    "--shape",
                    "2,8",
                    "--requests",
                    "60",
                    "--concurrency",
                    "3",
                    "--invalid-fraction",
                    "0.5",
                ],
            )
            .await;
            let what = format!("{rpc} {encoding}: {r}");
            assert_eq!(r["calls"], 30, "{what}");
            assert_eq!(r["invalid_calls"], 30, "{what}");
            let rejected = serde_json::json!({ "INVALID_ARGUMENT": 30 });
            assert_eq!(r["expected_errors"], rejected, "{what}");
            assert_eq!(r["errors"], rejected, "{what}");
            assert_eq!(r["unexpected"], serde_json::json!({}), "{what}");
        }
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn each_way_of_spoiling_a_call_is_rejected_on_its_own() {
    // Fraction 1: calls 0, 1, 2 are the NaN, length and two-field variants.
    let server = TestServer::start().await;
    for dtype in ["f32", "f64"] {
        for n in 1..=3 {
            let requests = n.to_string();
            let r = run_against(
                &server,
                &[
                    "--dtype",
                    dtype,
                    "--shape",
                    "3,5",
                    "--requests",
                    &requests,
                    "--concurrency",
                    "1",
                    "--invalid-fraction",
                    "1",
                ],
            )
            .await;
            assert_eq!(r["calls"], 0, "{r}");
            let rejected = serde_json::json!({ "INVALID_ARGUMENT": n });
            assert_eq!(r["expected_errors"], rejected, "{dtype}, {n} call(s): {r}");
            assert_eq!(r["unexpected"], serde_json::json!({}), "{r}");
        }
    }
    server.stop().await.expect("clean stop");
}

#[test]
fn an_invalid_call_that_is_answered_is_unexpected() {
    // The echo service answers anything: spoilt calls come back OK, which
    // the report must count as unexpected (and the run as failed). Its
    // servers run on a runtime of their own, started outside this one.
    let echo = softmaxd::bench::in_process::start(1).expect("in-process servers");
    let addr = echo.echo.to_string();
    let args = BenchArgs::parse_from([
        "softmaxd-bench",
        "--addr",
        &addr,
        "--warmup",
        "0",
        "--requests",
        "10",
        "--invalid-fraction",
        "0.5",
    ]);
    let target = Target {
        label: "echo".into(),
        addr,
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let out = runtime
        .block_on(bench::execute(&args, &target, None))
        .expect("the run completes");
    assert_eq!(out.failed(), 5);
    let r = serde_json::to_value(&out).expect("serialisable");
    assert_eq!(r["unexpected"], serde_json::json!({ "OK": 5 }), "{r}");
    assert_eq!(r["calls"], 5, "{r}");
}

#[tokio::test]
async fn reports_the_servers_cpu_time_per_call_when_given_its_pid() {
    let server = TestServer::start().await;
    let plan = [
        "--shape",
        "64,1000",
        "--duration",
        "1",
        "--concurrency",
        "4",
    ];
    let plain = run_against(&server, &plan).await;
    assert!(plain["server_cpu_us_per_call"].is_null(), "{plain}");
    // The test server runs in this process, so its pid is ours (the load
    // counts too, which does not matter here).
    let pid = std::process::id().to_string();
    let mut flags = plan.to_vec();
    flags.extend_from_slice(&["--server-pid", &pid]);
    let r = run_against(&server, &flags).await;
    no_errors(&r);
    let per_call = r["server_cpu_us_per_call"].as_f64().expect("per call");
    let cores = r["server_cpu_cores"].as_f64().expect("cores");
    let (calls, secs) = (
        r["calls"].as_f64().unwrap(),
        r["elapsed_s"].as_f64().unwrap(),
    );
    assert!(per_call > 0.0 && cores > 0.0, "{r}");
    assert!(cores <= std::thread::available_parallelism().unwrap().get() as f64 + 0.5);
    // Both are the same CPU time, divided differently.
    let total = per_call * calls / 1e6;
    assert!((total - cores * secs).abs() <= 1e-6 * total.max(1.0), "{r}");
    assert!(BenchArgs::try_parse_from(["softmaxd-bench", "--echo-pid", "1"]).is_err());
    server.stop().await.expect("clean stop");
}
