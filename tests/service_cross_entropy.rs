//! CrossEntropy over the wire, against labels and distributions, with the
//! identities: gradient (s - y)/T, zero at s = y.

mod harness;

use harness::reference::{cross_entropy, max_abs_diff, per_row, softmax, values};
use harness::wire::{expect, tensor, ALL_KINDS};
use harness::TestServer;
use softmaxd::proto::v1::{CrossEntropyRequest, ForwardRequest};

#[tokio::test]
async fn labels_and_targets_match_reference() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shapes: [&[u32]; 3] = [&[5], &[3, 4], &[2, 2, 6]];
    for kind in ALL_KINDS {
        for shape in shapes {
            for temperature in [None, Some(0.8f32)] {
                let n: u32 = shape.iter().product();
                let k = *shape.last().unwrap() as usize;
                let rows = n as usize / k;
                let batch = &shape[..shape.len() - 1];
                let t = temperature.map_or(1.0, f64::from);
                let x = kind.round(&values(n as usize, 5, -6.0, 6.0));
                let labels: Vec<u32> = (0..rows).map(|r| ((r * 7 + 1) % k) as u32).collect();
                let resp = client
                    .cross_entropy(CrossEntropyRequest {
                        logits: Some(tensor(shape, &x, kind)),
                        labels: labels.clone(),
                        target: None,
                        temperature,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let loss = expect(resp.loss, batch, kind);
                let grad = expect(resp.grad_logits, shape, kind);
                let mut want_loss = Vec::new();
                let mut want_grad = Vec::new();
                for (r, xr) in x.chunks(k).enumerate() {
                    let mut y = vec![0.0; k];
                    y[labels[r] as usize] = 1.0;
                    let (l, g) = cross_entropy(xr, &y, t);
                    want_loss.push(l);
                    want_grad.extend(g);
                }
                assert!(
                    max_abs_diff(&loss, &want_loss) <= 10.0 * kind.tol(),
                    "{kind:?} loss"
                );
                assert!(
                    max_abs_diff(&grad, &want_grad) <= 4.0 * kind.tol(),
                    "{kind:?} grad"
                );

                // A soft target that does not sum to 1.
                let y = kind.round(&values(n as usize, 6, 0.0, 0.5));
                let resp = client
                    .cross_entropy(CrossEntropyRequest {
                        logits: Some(tensor(shape, &x, kind)),
                        labels: vec![],
                        target: Some(tensor(shape, &y, kind)),
                        temperature,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let loss = expect(resp.loss, batch, kind);
                let grad = expect(resp.grad_logits, shape, kind);
                let mut want_loss = Vec::new();
                let mut want_grad = Vec::new();
                for (xr, yr) in x.chunks(k).zip(y.chunks(k)) {
                    let (l, g) = cross_entropy(xr, yr, t);
                    want_loss.push(l);
                    want_grad.extend(g);
                }
                assert!(
                    max_abs_diff(&loss, &want_loss) <= 20.0 * kind.tol(),
                    "{kind:?} soft loss"
                );
                assert!(
                    max_abs_diff(&grad, &want_grad) <= 4.0 * kind.tol(),
                    "{kind:?} soft grad"
                );
            }
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn gradient_vanishes_when_softmax_equals_target() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let k = 7;
    for kind in ALL_KINDS {
        let x = kind.round(&values(2 * k, 13, -2.0, 2.0));
        // The target is the server's own softmax output: s = y exactly.
        let y = client
            .forward(ForwardRequest {
                logits: Some(tensor(&[2, k as u32], &x, kind)),
                temperature: Some(1.7),
                log: false,
            })
            .await
            .unwrap()
            .into_inner()
            .output;
        let resp = client
            .cross_entropy(CrossEntropyRequest {
                logits: Some(tensor(&[2, k as u32], &x, kind)),
                labels: vec![],
                target: y,
                temperature: Some(1.7),
            })
            .await
            .unwrap()
            .into_inner();
        let grad = expect(resp.grad_logits, &[2, k as u32], kind);
        assert!(
            grad.iter().all(|g| g.abs() <= 10.0 * kind.tol()),
            "{kind:?}: {grad:?}"
        );
        let s = per_row(&x, k, |r| softmax(r, 1.7));
        assert!(s.iter().all(|&v| v > 0.0));
    }
    server.stop().await.unwrap();
}
