//! Every error condition of DESIGN.md §6 gets its status and a message
//! naming the field and position, and the server keeps answering.

mod harness;

use bytes::Bytes;
use harness::wire::{tensor, Kind};
use harness::TestServer;
use softmaxd::proto::v1::softmax_service_client::SoftmaxServiceClient;
use softmaxd::proto::v1::*;
use tonic::transport::Channel;
use tonic::Code;

fn fwd(t: Tensor) -> ForwardRequest {
    ForwardRequest {
        logits: Some(t),
        temperature: None,
        log: false,
    }
}

fn typed(shape: &[u32], v: &[f64]) -> Tensor {
    tensor(shape, v, Kind::F32Typed)
}

async fn expect_forward(
    client: &mut SoftmaxServiceClient<Channel>,
    req: ForwardRequest,
    code: Code,
    needle: &str,
) {
    let err = client.forward(req).await.expect_err("must fail");
    assert_eq!(err.code(), code, "{}", err.message());
    assert!(
        err.message().contains(needle),
        "message {:?} lacks {needle:?}",
        err.message()
    );
    // The server still answers a good request.
    let ok = client
        .forward(fwd(typed(&[2], &[0.0, 0.0])))
        .await
        .expect("still serving");
    assert_eq!(ok.into_inner().output.unwrap().f32, vec![0.5, 0.5]);
}

#[tokio::test]
async fn malformed_tensors_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    use Code::InvalidArgument as IA;
    expect_forward(
        &mut c,
        ForwardRequest {
            logits: None,
            temperature: None,
            log: false,
        },
        IA,
        "logits: missing tensor",
    )
    .await;
    expect_forward(
        &mut c,
        fwd(typed(&[], &[1.0])),
        IA,
        "logits.shape: must have at least one dim",
    )
    .await;
    expect_forward(&mut c, fwd(typed(&[3, 0], &[])), IA, "last dim").await;
    expect_forward(
        &mut c,
        fwd(typed(&[2, 3], &[1.0; 5])),
        IA,
        "logits.f32: holds 5 values but shape [2, 3] needs 6",
    )
    .await;
    expect_forward(
        &mut c,
        fwd(typed(&[u32::MAX, u32::MAX, u32::MAX], &[1.0])),
        IA,
        "more elements than",
    )
    .await;
    let mut two = typed(&[2], &[1.0, 2.0]);
    two.f64 = vec![1.0, 2.0];
    expect_forward(&mut c, fwd(two), IA, "found f32 and f64").await;
    let bad_len = Tensor {
        shape: vec![2],
        f32_le: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0]),
        ..Default::default()
    };
    expect_forward(
        &mut c,
        fwd(bad_len),
        IA,
        "logits.f32_le: 7 bytes is not a whole number of 4-byte values",
    )
    .await;
    let short = Tensor {
        shape: vec![3],
        f64_le: Bytes::from(vec![0u8; 16]),
        ..Default::default()
    };
    expect_forward(
        &mut c,
        fwd(short),
        IA,
        "logits.f64_le: holds 2 values but shape [3] needs 3",
    )
    .await;
    expect_forward(&mut c, fwd(typed(&[2], &[])), IA, "holds 0 values").await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_values_name_their_position() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    use Code::InvalidArgument as IA;
    expect_forward(
        &mut c,
        fwd(typed(&[2, 2], &[0.0, 1.0, f64::NAN, 2.0])),
        IA,
        "logits: NaN at flat index 2",
    )
    .await;
    expect_forward(
        &mut c,
        fwd(typed(&[3], &[0.0, f64::INFINITY, 1.0])),
        IA,
        "logits: +inf at flat index 1",
    )
    .await;
    for t in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let req = ForwardRequest {
            logits: Some(typed(&[2], &[1.0, 2.0])),
            temperature: Some(t),
            log: false,
        };
        expect_forward(&mut c, req, IA, "temperature").await;
    }
    let tiny = ForwardRequest {
        logits: Some(typed(&[2], &[1.0, 2.0])),
        temperature: Some(1e-45),
        log: false,
    };
    expect_forward(&mut c, tiny, IA, "1/T overflows").await;

    // Backward: grad_output must be finite, same shape and dtype; exactly one primary.
    let x = typed(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let cases = [
        (
            BackwardRequest {
                output: None,
                logits: Some(x.clone()),
                grad_output: Some(typed(&[2, 2], &[0.0, f64::NEG_INFINITY, 0.0, 0.0])),
                temperature: None,
                log: false,
            },
            "grad_output: -inf at flat index 1",
        ),
        (
            BackwardRequest {
                output: None,
                logits: Some(x.clone()),
                grad_output: Some(typed(&[4], &[0.0; 4])),
                temperature: None,
                log: false,
            },
            "grad_output: shape [4] does not match logits shape [2, 2]",
        ),
        (
            BackwardRequest {
                output: None,
                logits: Some(x.clone()),
                grad_output: Some(tensor(&[2, 2], &[0.0; 4], Kind::F64Typed)),
                temperature: None,
                log: false,
            },
            "grad_output: dtype f64 does not match the request's dtype f32",
        ),
        (
            BackwardRequest {
                output: Some(x.clone()),
                logits: Some(x.clone()),
                grad_output: Some(x.clone()),
                temperature: None,
                log: false,
            },
            "exactly one",
        ),
        (
            BackwardRequest {
                output: None,
                logits: None,
                grad_output: Some(x.clone()),
                temperature: None,
                log: false,
            },
            "missing tensor",
        ),
        (
            BackwardRequest {
                output: None,
                logits: Some(x.clone()),
                grad_output: None,
                temperature: None,
                log: false,
            },
            "grad_output: missing tensor",
        ),
        (
            BackwardRequest {
                output: Some(typed(&[2], &[f64::NEG_INFINITY, 1.0])),
                logits: None,
                grad_output: Some(typed(&[2], &[0.0, 0.0])),
                temperature: None,
                log: false,
            },
            "output: -inf at flat index 0",
        ),
    ];
    for (req, needle) in cases {
        let err = c.backward(req).await.expect_err(needle);
        assert_eq!(err.code(), IA, "{}", err.message());
        assert!(
            err.message().contains(needle),
            "{:?} lacks {needle:?}",
            err.message()
        );
    }
    // -inf is fine in log-probabilities.
    let ok = c
        .backward(BackwardRequest {
            output: Some(typed(&[2], &[f64::NEG_INFINITY, 0.0])),
            logits: None,
            grad_output: Some(typed(&[2], &[1.0, 1.0])),
            temperature: None,
            log: true,
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");

    // CrossEntropy: labels in range, one per vector; target finite and >= 0.
    let ce = |labels: Vec<u32>, target: Option<Tensor>| CrossEntropyRequest {
        logits: Some(x.clone()),
        labels,
        target,
        temperature: None,
    };
    let cases = [
        (
            ce(vec![0, 2], None),
            "labels: label 2 at index 1 is out of range for k = 2",
        ),
        (ce(vec![0], None), "labels: 1 labels for 2 vectors"),
        (ce(vec![], None), "labels, target: missing"),
        (ce(vec![0, 1], Some(x.clone())), "not both"),
        (
            ce(vec![], Some(typed(&[2, 2], &[0.5, -0.1, 0.5, 0.5]))),
            "target: negative value -0.1 at flat index 1",
        ),
        (
            ce(vec![], Some(typed(&[2, 2], &[0.5, 0.5, f64::NAN, 0.5]))),
            "target: NaN at flat index 2",
        ),
    ];
    for (req, needle) in cases {
        let err = c.cross_entropy(req).await.expect_err(needle);
        assert_eq!(err.code(), IA, "{}", err.message());
        assert!(
            err.message().contains(needle),
            "{:?} lacks {needle:?}",
            err.message()
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_values_far_into_large_raw_tensors_name_their_position() {
    // Raw values are checked block by block as the kernel reads them: a bad
    // value many blocks in must still be found and named exactly.
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for (kind, at) in [(Kind::F32Raw, 40_123), (Kind::F64Raw, 63_999)] {
        let mut v = vec![0.5; 64_000];
        v[at] = f64::NAN;
        let want = format!("logits: NaN at flat index {at}");
        expect_forward(
            &mut c,
            fwd(tensor(&[64, 1000], &v, kind)),
            Code::InvalidArgument,
            &want,
        )
        .await;
        // With a second bad value some blocks earlier, that one is named,
        // whatever order the blocks are computed in.
        v[1_234] = f64::INFINITY;
        expect_forward(
            &mut c,
            fwd(tensor(&[64, 1000], &v, kind)),
            Code::InvalidArgument,
            "logits: +inf at flat index 1234",
        )
        .await;
        let mut g = vec![0.25; 64_000];
        g[at - 1] = f64::INFINITY;
        let req = BackwardRequest {
            output: None,
            logits: Some(tensor(&[64, 1000], &vec![0.0; 64_000], kind)),
            grad_output: Some(tensor(&[64, 1000], &g, kind)),
            temperature: None,
            log: false,
        };
        let err = c.backward(req).await.expect_err("must fail");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.message(),
            format!(
                "grad_output: +inf at flat index {} (only finite values are allowed)",
                at - 1
            )
        );
        // CrossEntropy's logits, against labels and a distribution; again
        // the lower of two bad values is named.
        let mut x = vec![0.5; 64_000];
        x[at] = f64::NAN;
        let uniform = tensor(&[64, 1000], &vec![1e-3; 64_000], kind);
        for (bad, want) in [(None, at), (Some(2_500), 2_500)] {
            if let Some(b) = bad {
                x[b] = f64::INFINITY;
            }
            for target in [None, Some(uniform.clone())] {
                let req = CrossEntropyRequest {
                    logits: Some(tensor(&[64, 1000], &x, kind)),
                    labels: if target.is_some() {
                        vec![]
                    } else {
                        vec![3; 64]
                    },
                    target,
                    temperature: None,
                };
                let Err(err) = c.cross_entropy(req).await else {
                    panic!("logits with {bad:?} bad from {at}: served");
                };
                assert_eq!(err.code(), Code::InvalidArgument);
                let what = if bad.is_some() { "+inf" } else { "NaN" };
                let needle = format!("logits: {what} at flat index {want} (only finite");
                assert!(err.message().starts_with(&needle), "{}", err.message());
            }
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted() {
    let mut config = softmaxd::server::Config::for_tests();
    config.max_message_bytes = 64 << 10;
    let server = TestServer::start_with(config).await;
    let mut c = server.client().await;
    // A request over the decoding limit.
    let big = Tensor {
        shape: vec![32 << 10],
        f32_le: Bytes::from(vec![0u8; 128 << 10]),
        ..Default::default()
    };
    let err = c.forward(fwd(big)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    // A unary Jacobian whose response is over the limit.
    let req = JacobianRequest {
        logits: Some(typed(&[200], &[0.0; 200])),
        output: None,
        temperature: None,
        log: false,
    };
    let err = c.jacobian(req).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("JacobianStream"));
    // A single vector whose Jacobian cannot fit in any message.
    let req = JacobianRequest {
        logits: Some(typed(&[200], &[0.0; 200])),
        output: None,
        temperature: None,
        log: false,
    };
    let err = c.jacobian_stream(req).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let ok = c.forward(fwd(typed(&[2], &[0.0, 0.0]))).await;
    assert!(ok.is_ok());
    server.stop().await.unwrap();
}
