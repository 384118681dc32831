//! Transport concerns: gzip and zstd requests and responses, a 32 MiB
//! request through the default limits, the bytes of the answers the
//! service encodes itself, and many answers at once through the opt-in
//! write gathering.

mod harness;

use bytes::Bytes;
use harness::reference::{
    backward, cross_entropy, jacobian, log_softmax, max_abs_diff, per_row, softmax, values,
};
use harness::wire::{expect, read, tensor, Kind};
use harness::{raw_call, TestServer, FORWARD};
use prost::Message;
use softmaxd::proto::v1::{
    BackwardRequest, BackwardResponse, CrossEntropyRequest, CrossEntropyResponse, ForwardRequest,
    ForwardResponse, JacobianRequest, JacobianResponse,
};
use softmaxd::server::Config;
use tonic::codec::CompressionEncoding;

#[tokio::test]
async fn compressed_requests_and_responses() {
    let server = TestServer::start_with(Config {
        compress_responses: true,
        ..Config::for_tests()
    })
    .await;
    for enc in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = server
            .client()
            .await
            .send_compressed(enc)
            .accept_compressed(enc);
        let x = Kind::F64Raw.round(&values(4 * 100, 3, -3.0, 3.0));
        let resp = client
            .forward(ForwardRequest {
                logits: Some(tensor(&[4, 100], &x, Kind::F64Raw)),
                temperature: None,
                log: false,
            })
            .await
            .unwrap();
        let enc_header = resp
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            enc_header.as_deref(),
            Some(if enc == CompressionEncoding::Gzip {
                "gzip"
            } else {
                "zstd"
            })
        );
        let got = expect(resp.into_inner().output, &[4, 100], Kind::F64Raw);
        let want = per_row(&x, 100, |r| softmax(r, 1.0));
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12));
        // The other unary methods leave the direct route the same way.
        let y = per_row(&x, 100, |r| softmax(r, 2.0));
        let resp = client
            .cross_entropy(CrossEntropyRequest {
                logits: Some(tensor(&[4, 100], &x, Kind::F64Raw)),
                target: Some(tensor(&[4, 100], &y, Kind::F64Raw)),
                ..CrossEntropyRequest::default()
            })
            .await
            .unwrap();
        assert!(resp.metadata().get("grpc-encoding").is_some(), "{enc:?}");
        let got = expect(resp.into_inner().grad_logits, &[4, 100], Kind::F64Raw);
        let want: Vec<f64> = x
            .chunks(100)
            .zip(y.chunks(100))
            .flat_map(|(x, y)| cross_entropy(x, y, 1.0).1)
            .collect();
        assert!(max_abs_diff(&got, &want) < 1e-12);
        // And the streaming ones: compressed streams go through tonic.
        let req = JacobianRequest {
            logits: Some(tensor(&[4, 100], &x, Kind::F64Raw)),
            ..JacobianRequest::default()
        };
        let mut stream = client.jacobian_stream(req).await.unwrap().into_inner();
        let mut got = Vec::new();
        while let Some(msg) = stream.message().await.unwrap() {
            assert_eq!(msg.first_row, got.len() as u64 / 10_000, "{enc:?}");
            let n = msg.jacobian.as_ref().map_or(0, |t| t.shape[0]);
            got.extend(expect(msg.jacobian, &[n, 100, 100], Kind::F64Raw));
        }
        let want = per_row(&x, 100, |r| jacobian(r, 1.0, false));
        assert!(max_abs_diff(&got, &want) < 1e-12, "{enc:?}");
        let reqs = [ForwardRequest {
            logits: Some(tensor(&[4, 100], &x, Kind::F64Raw)),
            temperature: Some(0.5),
            log: false,
        }];
        let mut answers = client
            .forward_stream(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let got = expect(
            answers.message().await.unwrap().unwrap().output,
            &[4, 100],
            Kind::F64Raw,
        );
        let want = per_row(&x, 100, |r| softmax(r, 0.5));
        assert!(max_abs_diff(&got, &want) < 1e-12, "{enc:?}");
        assert!(answers.message().await.unwrap().is_none());
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn responses_are_uncompressed_unless_the_server_is_told_to() {
    let server = TestServer::start().await;
    let mut client = server
        .client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let x = Kind::F32Raw.round(&values(2 * 50, 5, -3.0, 3.0));
    let resp = client
        .forward(ForwardRequest {
            logits: Some(tensor(&[2, 50], &x, Kind::F32Raw)),
            temperature: None,
            log: false,
        })
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("grpc-encoding"), None);
    let got = expect(resp.into_inner().output, &[2, 50], Kind::F32Raw);
    let want = per_row(&x, 50, |r| softmax(r, 1.0));
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 2e-6));
    server.stop().await.unwrap();
}

/// With `--coalesce-writes`, small answers wait in one buffer and large ones
/// go out behind them: 48 concurrent calls on one connection, answers of
/// 40 bytes to 128 KiB (past the 16 KiB copy limit), each still gets its
/// own right answer.
#[tokio::test]
async fn gathered_writes_keep_every_answer_whole_and_in_its_stream() {
    let server = TestServer::start_with(Config {
        coalesce_writes: true,
        ..Config::for_tests()
    })
    .await;
    let client = server.client().await;
    let calls = (0..48u64).map(|i| {
        let mut client = client.clone();
        // Rows of k values: small (k = 10, 1000) and large (k = 32768) answers.
        let k = [10usize, 1000, 32768][i as usize % 3];
        async move {
            let x = Kind::F32Raw.round(&values(k, 100 + i, -8.0, 8.0));
            let resp = client
                .forward(ForwardRequest {
                    logits: Some(tensor(&[1, k as u32], &x, Kind::F32Raw)),
                    temperature: None,
                    log: false,
                })
                .await
                .unwrap()
                .into_inner();
            let got = expect(resp.output, &[1, k as u32], Kind::F32Raw);
            let want = softmax(&x, 1.0);
            let worst = max_abs_diff(&got, &want);
            assert!(worst <= 2e-6, "call {i} (k = {k}): off by {worst}");
        }
    });
    let all = futures::future::join_all(calls);
    tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("every call is answered");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_32_mib_request_is_served() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (rows, k) = (2048usize, 4096usize); // 8 Mi f32 values = 32 MiB
    let x = Kind::F32Raw.round(&values(rows * k, 17, -10.0, 10.0));
    let resp = client
        .forward(ForwardRequest {
            logits: Some(tensor(&[rows as u32, k as u32], &x, Kind::F32Raw)),
            temperature: None,
            log: false,
        })
        .await
        .unwrap()
        .into_inner();
    let got = expect(resp.output, &[rows as u32, k as u32], Kind::F32Raw);
    // Spot-check a few rows against the reference and every row's sum.
    for r in [0, 1, rows / 2, rows - 1] {
        let want = per_row(&x[r * k..(r + 1) * k], k, |v| softmax(v, 1.0));
        let row = &got[r * k..(r + 1) * k];
        assert!(
            row.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 2e-6),
            "row {r}"
        );
    }
    for row in got.chunks(k) {
        let s: f64 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-4, "row sums to {s}");
    }
    server.stop().await.unwrap();
}

const CROSS_ENTROPY: &str = "/softmax.v1.SoftmaxService/CrossEntropy";
const JACOBIAN: &str = "/softmax.v1.SoftmaxService/Jacobian";

/// `m` as one uncompressed gRPC message.
fn grpc_frame(m: &impl Message) -> Bytes {
    let body = m.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Bytes::from(frame)
}

/// What a raw call got back: grpc-status, grpc-message, content-type and
/// the response body's bytes.
struct Exchange {
    status: String,
    message: String,
    content_type: String,
    body: Vec<u8>,
}

/// Calls `path` over plain HTTP/2, sending `pieces` as one DATA frame each
/// (the last one ends the stream), and reads the whole answer, trailers-only
/// or not.
async fn raw_exchange(addr: std::net::SocketAddr, path: &str, pieces: &[Bytes]) -> Exchange {
    let (first, rest) = pieces.split_first().unwrap();
    let (_client, resp, mut send) = raw_call(addr, path, first.clone(), rest.is_empty()).await;
    for (i, piece) in rest.iter().enumerate() {
        send.send_data(piece.clone(), i + 1 == rest.len()).unwrap();
    }
    let resp = resp.unwrap().await.unwrap();
    let header = |h: &http::HeaderMap, k: &str| h.get(k).map(|v| v.to_str().unwrap().to_string());
    let content_type = header(resp.headers(), "content-type").unwrap_or_default();
    if let Some(status) = header(resp.headers(), "grpc-status") {
        let message = header(resp.headers(), "grpc-message").unwrap_or_default();
        return Exchange {
            status,
            message,
            content_type,
            body: Vec::new(),
        };
    }
    let mut body = resp.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    Exchange {
        status: header(&trailers, "grpc-status").unwrap(),
        message: header(&trailers, "grpc-message").unwrap_or_default(),
        content_type,
        body: data,
    }
}

/// Calls `path` over plain HTTP/2 and returns the response's content-type,
/// its one message (prefix checked and stripped) and its trailers' grpc-status.
async fn raw_unary(
    addr: std::net::SocketAddr,
    path: &str,
    frame: Bytes,
) -> (String, Bytes, String) {
    let got = raw_exchange(addr, path, &[frame]).await;
    let data = got.body;
    assert_eq!(data[0], 0, "uncompressed");
    let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
    assert_eq!(data.len(), 5 + len, "exactly one message");
    (got.content_type, Bytes::from(data).slice(5..), got.status)
}

/// `frame` cut into DATA frames at `cuts` (byte offsets, increasing).
fn split(frame: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(frame.len());
    bounds.windows(2).map(|w| frame.slice(w[0]..w[1])).collect()
}

/// `good` and four ways of spoiling it, each named.
fn spoiled(good: &Bytes) -> [(&'static str, Bytes); 5] {
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.to_vec();
        f(&mut v);
        Bytes::from(v)
    };
    [
        ("good", good.clone()),
        ("garbage", with(&|v| v[5] = 0xFF)), // no valid protobuf key
        // Compressed, but no grpc-encoding was named.
        ("flagged", with(&|v| v[0] = 1)),
        // The prefix promises one byte more than comes.
        (
            "short",
            with(&|v| {
                v.pop();
            }),
        ),
        // Not a message: unary reads only the first.
        ("trailing", with(&|v| v.extend_from_slice(&[1, 2, 3]))),
    ]
}

/// Sends `good` and its spoiled variants to `path` whole and cut into
/// several DATA frames, asserts that the cuts change nothing and that only
/// the good ones succeed, and returns the good answer's message.
async fn same_whole_or_cut(addr: std::net::SocketAddr, path: &str, good: &Bytes) -> Vec<u8> {
    let mut answer = None;
    for (what, frame) in spoiled(good) {
        let whole = raw_exchange(addr, path, std::slice::from_ref(&frame)).await;
        for cuts in [&[5][..], &[2, 100], &[5, 6, 7, frame.len() - 1]] {
            let pieces = raw_exchange(addr, path, &split(&frame, cuts)).await;
            assert_eq!(
                (&pieces.status, &pieces.message, &pieces.body),
                (&whole.status, &whole.message, &whole.body),
                "{path}: {what} cut at {cuts:?}"
            );
        }
        let ok = whole.status == "0";
        assert_eq!(
            ok,
            matches!(what, "good" | "trailing"),
            "{path}: {what}: {} {}",
            whole.status,
            whole.message
        );
        if what == "good" {
            answer = Some(whole.body[5..].to_vec());
        }
    }
    answer.expect("the good request was answered")
}

#[tokio::test]
async fn a_request_gets_the_same_answer_in_one_data_frame_or_several() {
    // A request in one DATA frame is decoded where h2 read it; over several
    // it is assembled, or replayed into tonic's decoder when it is not a
    // plain message. Answers and errors must not differ, for every unary
    // method that takes that path.
    let server = TestServer::start().await;
    let x = Kind::F32Raw.round(&values(6 * 50, 41, -5.0, 5.0));
    let frame = grpc_frame(&ForwardRequest {
        logits: Some(tensor(&[6, 50], &x, Kind::F32Raw)),
        temperature: Some(0.5),
        log: true,
    });
    let answer = same_whole_or_cut(server.addr, FORWARD, &frame).await;
    let got = expect(
        ForwardResponse::decode(&answer[..]).unwrap().output,
        &[6, 50],
        Kind::F32Raw,
    );
    let want = per_row(&x, 50, |r| log_softmax(r, 0.5));
    assert!(max_abs_diff(&got, &want) <= 1e-5);

    let labels: Vec<u32> = (0..6).map(|i| i * 7 % 50).collect();
    let frame = grpc_frame(&CrossEntropyRequest {
        logits: Some(tensor(&[6, 50], &x, Kind::F32Raw)),
        labels: labels.clone(),
        ..CrossEntropyRequest::default()
    });
    let answer = same_whole_or_cut(server.addr, CROSS_ENTROPY, &frame).await;
    let resp = CrossEntropyResponse::decode(&answer[..]).unwrap();
    let (loss, grad) = (
        expect(resp.loss, &[6], Kind::F32Raw),
        expect(resp.grad_logits, &[6, 50], Kind::F32Raw),
    );
    for (r, &c) in labels.iter().enumerate() {
        let row = &x[r * 50..(r + 1) * 50];
        let y: Vec<f64> = (0..50).map(|j| f64::from(j == c as usize)).collect();
        let (want_loss, want_grad) = cross_entropy(row, &y, 1.0);
        assert!((loss[r] - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0));
        assert!(max_abs_diff(&grad[r * 50..(r + 1) * 50], &want_grad) <= 1e-6);
    }

    let frame = grpc_frame(&JacobianRequest {
        logits: Some(tensor(&[2, 50], &x[..100], Kind::F32Raw)),
        ..JacobianRequest::default()
    });
    let answer = same_whole_or_cut(server.addr, JACOBIAN, &frame).await;
    let got = expect(
        JacobianResponse::decode(&answer[..]).unwrap().jacobian,
        &[2, 50, 50],
        Kind::F32Raw,
    );
    let want = per_row(&x[..100], 50, |r| jacobian(r, 1.0, false));
    assert!(max_abs_diff(&got, &want) <= 1e-6);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn raw_answers_are_canonical_grpc_messages_on_the_wire() {
    let server = TestServer::start().await;
    // Forward, f32, three dims and a row length that is no multiple of 16.
    let (shape, k) = ([3u32, 5, 7], 7usize);
    let x = Kind::F32Raw.round(&values(105, 23, -4.0, 4.0));
    let req = ForwardRequest {
        logits: Some(tensor(&shape, &x, Kind::F32Raw)),
        temperature: None,
        log: false,
    };
    let (content_type, msg, status) = raw_unary(server.addr, FORWARD, grpc_frame(&req)).await;
    assert_eq!(
        (content_type.as_str(), status.as_str()),
        ("application/grpc", "0")
    );
    let resp = ForwardResponse::decode(msg.clone()).unwrap();
    assert_eq!(
        resp.encode_to_vec(),
        msg,
        "byte for byte what prost encodes"
    );
    let got = expect(resp.output, &shape, Kind::F32Raw);
    let want = per_row(&x, k, |r| softmax(r, 1.0));
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 2e-6));

    // Backward, f64, from the logits.
    let x = Kind::F64Raw.round(&values(4 * 9, 29, -2.0, 2.0));
    let g = Kind::F64Raw.round(&values(4 * 9, 31, -1.0, 1.0));
    let req = BackwardRequest {
        logits: Some(tensor(&[4, 9], &x, Kind::F64Raw)),
        grad_output: Some(tensor(&[4, 9], &g, Kind::F64Raw)),
        ..BackwardRequest::default()
    };
    let path = "/softmax.v1.SoftmaxService/Backward";
    let (content_type, msg, status) = raw_unary(server.addr, path, grpc_frame(&req)).await;
    assert_eq!(
        (content_type.as_str(), status.as_str()),
        ("application/grpc", "0")
    );
    let resp = BackwardResponse::decode(msg.clone()).unwrap();
    assert_eq!(
        resp.encode_to_vec(),
        msg,
        "byte for byte what prost encodes"
    );
    let (kind, got) = read(&resp.grad_logits.unwrap());
    assert_eq!(kind, Kind::F64Raw);
    let want: Vec<f64> = x
        .chunks(9)
        .zip(g.chunks(9))
        .flat_map(|(x, g)| backward(x, g, 1.0, false))
        .collect();
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-13));

    // Jacobian, both encodings, with batch dims: a unary answer's
    // `first_row` is 0, so the message is the tensor's field alone.
    let x = values(2 * 3 * 6, 37, -3.0, 3.0);
    for (kind, tol) in [(Kind::F32Typed, 1e-6), (Kind::F64Raw, 1e-14)] {
        let x = kind.round(&x);
        let req = JacobianRequest {
            logits: Some(tensor(&[2, 3, 6], &x, kind)),
            temperature: Some(1.5),
            ..JacobianRequest::default()
        };
        let (content_type, msg, status) = raw_unary(server.addr, JACOBIAN, grpc_frame(&req)).await;
        assert_eq!(
            (content_type.as_str(), status.as_str()),
            ("application/grpc", "0")
        );
        let resp = JacobianResponse::decode(msg.clone()).unwrap();
        assert_eq!(resp.encode_to_vec(), msg, "{kind:?}: byte for byte");
        assert_eq!(resp.first_row, 0);
        let got = expect(resp.jacobian, &[2, 3, 6, 6], kind);
        let want = per_row(&x, 6, |r| jacobian(r, 1.5, false));
        assert!(max_abs_diff(&got, &want) <= tol, "{kind:?}");
    }

    // CrossEntropy, both encodings: `loss` (its values written once known)
    // ahead of `grad_logits`, as prost orders them.
    let (shape, k) = ([2u32, 3, 9], 9usize);
    let x = values(54, 43, -3.0, 3.0);
    let labels: Vec<u32> = (0..6).map(|i| (i * 4) % 9).collect();
    for (kind, tol) in [(Kind::F32Raw, 1e-5), (Kind::F64Typed, 1e-13)] {
        let x = kind.round(&x);
        let req = CrossEntropyRequest {
            logits: Some(tensor(&shape, &x, kind)),
            labels: labels.clone(),
            ..CrossEntropyRequest::default()
        };
        let (content_type, msg, status) =
            raw_unary(server.addr, CROSS_ENTROPY, grpc_frame(&req)).await;
        assert_eq!(
            (content_type.as_str(), status.as_str()),
            ("application/grpc", "0")
        );
        let resp = CrossEntropyResponse::decode(msg.clone()).unwrap();
        assert_eq!(resp.encode_to_vec(), msg, "{kind:?}: byte for byte");
        let loss = expect(resp.loss, &[2, 3], kind);
        let grad = expect(resp.grad_logits, &shape, kind);
        for (r, &c) in labels.iter().enumerate() {
            let y: Vec<f64> = (0..k).map(|j| f64::from(j == c as usize)).collect();
            let (want_loss, want_grad) = cross_entropy(&x[r * k..(r + 1) * k], &y, 1.0);
            assert!((loss[r] - want_loss).abs() <= tol * want_loss.abs().max(1.0));
            assert!(max_abs_diff(&grad[r * k..(r + 1) * k], &want_grad) <= tol);
        }
    }
    server.stop().await.unwrap();
}
