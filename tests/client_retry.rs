//! The Rust client's retries and reconnects: UNAVAILABLE is retried with
//! backoff up to the policy's bound, other codes and ForwardStream never, and
//! one client keeps working across a server restart on the same port.

mod client_support;

use client_support::Server;
use futures::StreamExt;
use ndarray::{array, ArrayD};
use softmaxd::client::{Client, ClientError, ClientOptions, Params, RetryPolicy, Source, Target};
use softmaxd::proto::v1::softmax_service_server::SoftmaxServiceServer;
use softmaxd::proto::v1::ForwardRequest;
use softmaxd::service::{self, Softmax};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};

/// A softmaxd service in this process whose first `fail` calls are refused
/// with `code`; returns its address and the count of calls it has seen.
async fn flaky(fail: usize, code: Code) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let service = SoftmaxServiceServer::with_interceptor(
        Softmax::new(service::Config::default()),
        move |req| {
            if seen.fetch_add(1, Ordering::SeqCst) < fail {
                Err(Status::new(code, "refused by the test"))
            } else {
                Ok(req)
            }
        },
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (addr, calls)
}

/// Short waits, so the tests do not sleep through the default backoff.
fn quick(max_attempts: u32) -> ClientOptions {
    ClientOptions {
        timeout: Some(Duration::from_secs(30)),
        retry: RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
        },
        ..ClientOptions::default()
    }
}

/// softmax([1, 2, 3]) in f64, straight from the formula.
fn reference() -> Vec<f64> {
    let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

fn assert_softmax(out: &ArrayD<f64>) {
    assert_eq!(out.shape(), [1, 3]);
    for (got, want) in out.iter().zip(reference()) {
        assert!((got - want).abs() < 1e-15, "{got} vs {want}");
    }
}

async fn forward(client: &Client) -> Result<ArrayD<f64>, ClientError> {
    client
        .forward(array![[1.0f64, 2.0, 3.0]].view(), Params::default())
        .await
}

#[tokio::test]
async fn unavailable_is_retried_until_the_call_succeeds() {
    let (addr, calls) = flaky(2, Code::Unavailable).await;
    let client = Client::connect_with(&addr, quick(5)).await.unwrap();
    assert_softmax(&forward(&client).await.unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two refusals, one answer");
}

#[tokio::test]
async fn the_default_policy_retries_too() {
    let (addr, calls) = flaky(1, Code::Unavailable).await;
    let client = Client::connect(&addr).await.unwrap();
    assert_eq!(client.options().retry, RetryPolicy::default());
    assert_softmax(&forward(&client).await.unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let (addr, calls) = flaky(usize::MAX, Code::Unavailable).await;
    let client = Client::connect_with(&addr, quick(3)).await.unwrap();
    let err = forward(&client).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let once = Client::connect_with(
        &addr,
        ClientOptions {
            retry: RetryPolicy::never(),
            ..quick(1)
        },
    )
    .await
    .unwrap();
    assert_eq!(forward(&once).await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(calls.load(Ordering::SeqCst), 4, "never: one try");
}

#[tokio::test]
async fn other_codes_are_not_retried() {
    // Busy: retrying would only add to the overload.
    let (addr, calls) = flaky(usize::MAX, Code::ResourceExhausted).await;
    let client = Client::connect_with(&addr, quick(5)).await.unwrap();
    assert_eq!(
        forward(&client).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A bad request stays bad.
    let (addr, calls) = flaky(0, Code::Ok).await;
    let client = Client::connect_with(&addr, quick(5)).await.unwrap();
    let x = array![[1.0f32, 2.0, 3.0]];
    let err = client
        .cross_entropy(x.view(), Target::Labels(&[7]), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn jacobian_stream_is_retried_until_it_starts() {
    let (addr, calls) = flaky(2, Code::Unavailable).await;
    let client = Client::connect_with(&addr, quick(5)).await.unwrap();
    let x = array![[0.5f64, -0.5]];
    let j = client
        .jacobian_with(Source::Logits(x.view()), Params::default(), Some(true))
        .await
        .unwrap();
    // s = softmax(x); J = diag(s) - s sᵀ.
    let s1 = 1.0 / (1.0 + (-1.0f64).exp());
    let s = [s1, 1.0 - s1];
    assert_eq!(j.shape(), [1, 2, 2]);
    for (i, &si) in s.iter().enumerate() {
        for (c, &sc) in s.iter().enumerate() {
            let want = if i == c { si - si * sc } else { -si * sc };
            assert!((j[[0, i, c]] - want).abs() < 1e-15);
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn forward_stream_is_not_retried() {
    // Its inputs are consumed as they are sent, so there is nothing to resend.
    let (addr, calls) = flaky(1, Code::Unavailable).await;
    let client = Client::connect_with(&addr, quick(5)).await.unwrap();
    let inputs = futures::stream::iter([array![1.0f32, 2.0].into_dyn()]);
    let code = match client.forward_stream(inputs, Params::default()).await {
        Err(e) => e.code(),
        Ok(mut outputs) => outputs.next().await.unwrap().unwrap_err().code(),
    };
    assert_eq!(code, Code::Unavailable);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn one_client_reconnects_after_the_server_restarts() {
    let mut server = Server::start_own().await;
    let client = server.client().await;
    assert_softmax(&forward(&client).await.unwrap());

    server.kill();
    // Down: the same channel, without retries, fails; a broken connection
    // (tonic: UNKNOWN "transport error") and a refused one are both
    // UNAVAILABLE to the client, so both are retried.
    for _ in 0..2 {
        let down = client.raw().forward(ForwardRequest::default()).await;
        let down = ClientError::from(down.unwrap_err());
        assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    }

    server.spawn().await;
    assert_softmax(&forward(&client).await.unwrap());

    // Restarted between two calls: the next call meets the broken
    // connection first, and the retry reconnects.
    server.kill();
    server.spawn().await;
    assert_softmax(&forward(&client).await.unwrap());
    assert_softmax(&forward(&client.clone()).await.unwrap());
}
