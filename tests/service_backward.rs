//! Backward over the wire, from the output or the logits, softmax and
//! log-softmax, against g·J of the f64 reference and the uniform-gradient
//! identity.

mod harness;

use harness::reference::{backward, log_softmax, max_abs_diff, per_row, softmax, values};
use harness::wire::{expect, tensor, ALL_KINDS};
use harness::TestServer;
use softmaxd::proto::v1::{BackwardRequest, ForwardRequest};

#[tokio::test]
async fn backward_matches_vjp_reference() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shapes: [&[u32]; 3] = [&[6], &[4, 5], &[2, 2, 3]];
    for kind in ALL_KINDS {
        for shape in shapes {
            for (temperature, log) in [
                (None, false),
                (Some(2.0f32), false),
                (None, true),
                (Some(0.7), true),
            ] {
                let n: u32 = shape.iter().product();
                let k = *shape.last().unwrap() as usize;
                let t = temperature.map_or(1.0, f64::from);
                let x = kind.round(&values(n as usize, 3, -4.0, 4.0));
                let g = kind.round(&values(n as usize, 4, -1.0, 1.0));
                let mut want = Vec::new();
                for (xr, gr) in x.chunks(k).zip(g.chunks(k)) {
                    want.extend(backward(xr, gr, t, log));
                }
                // From logits.
                let from_logits = client
                    .backward(BackwardRequest {
                        output: None,
                        logits: Some(tensor(shape, &x, kind)),
                        grad_output: Some(tensor(shape, &g, kind)),
                        temperature,
                        log,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let got = expect(from_logits.grad_logits, shape, kind);
                assert!(
                    max_abs_diff(&got, &want) <= 4.0 * kind.tol(),
                    "{kind:?} {shape:?} log={log}"
                );
                // From the Forward output, as a client would chain them.
                let s = client
                    .forward(ForwardRequest {
                        logits: Some(tensor(shape, &x, kind)),
                        temperature,
                        log,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .output;
                let from_output = client
                    .backward(BackwardRequest {
                        output: s,
                        logits: None,
                        grad_output: Some(tensor(shape, &g, kind)),
                        temperature,
                        log,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let got = expect(from_output.grad_logits, shape, kind);
                assert!(
                    max_abs_diff(&got, &want) <= 4.0 * kind.tol(),
                    "{kind:?} {shape:?} log={log} from output"
                );
            }
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn uniform_upstream_gradient_passes_no_gradient() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let k = 9;
    for kind in ALL_KINDS {
        let x = kind.round(&values(3 * k, 8, -5.0, 5.0));
        let g = vec![0.75; 3 * k];
        let resp = client
            .backward(BackwardRequest {
                output: None,
                logits: Some(tensor(&[3, k as u32], &x, kind)),
                grad_output: Some(tensor(&[3, k as u32], &g, kind)),
                temperature: Some(0.3),
                log: false,
            })
            .await
            .unwrap()
            .into_inner();
        let got = expect(resp.grad_logits, &[3, k as u32], kind);
        assert!(
            got.iter().all(|v| v.abs() <= 10.0 * kind.tol()),
            "{kind:?}: {got:?}"
        );
        // Sanity of the reference itself: softmax sums to 1, log agrees.
        let s = per_row(&x, k, |r| softmax(r, 1.0));
        let l = per_row(&x, k, |r| log_softmax(r, 1.0));
        assert!(s.iter().zip(&l).all(|(a, b)| (a.ln() - b).abs() < 1e-9));
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn finite_values_whose_products_overflow_are_not_rejected() {
    // Only finiteness is required of the output tensor. In f32, 1e30·1e30
    // overflows, which trips the kernel's screen; the scan that follows
    // finds every value finite, so the call is served, as before the screen.
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let s = [1e30, 1e30, 1.0, 0.5, 0.25, 0.25];
    let g = [1e30, 1e30, 0.0, 1.0, -1.0, 2.0];
    for kind in [harness::wire::Kind::F32Typed, harness::wire::Kind::F32Raw] {
        let resp = client
            .backward(BackwardRequest {
                output: Some(tensor(&[2, 3], &s, kind)),
                logits: None,
                grad_output: Some(tensor(&[2, 3], &g, kind)),
                temperature: None,
                log: false,
            })
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"))
            .into_inner();
        let got = expect(resp.grad_logits, &[2, 3], kind);
        // The second row is an ordinary one and must be exact.
        let want = backward_from_output(&s[3..], &g[3..]);
        let diff = max_abs_diff(&got[3..], &want);
        assert!(diff <= kind.tol(), "{kind:?}: {got:?} vs {want:?}");
    }
    server.stop().await.unwrap();
}

/// `s (g - ⟨g, s⟩)` in f64: the VJP given the forward output.
fn backward_from_output(s: &[f64], g: &[f64]) -> Vec<f64> {
    let d: f64 = s.iter().zip(g).map(|(s, g)| s * g).sum();
    s.iter().zip(g).map(|(s, g)| s * (g - d)).collect()
}
