//! Random and mutated requests thrown at the in-process service: no panic,
//! only documented status codes, and a good request still answered after.

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use softmaxd::proto::v1::softmax_service_server::SoftmaxService;
use softmaxd::proto::v1::*;
use softmaxd::service::{Config, Softmax};
use tonic::{Code, Request};

const DOCUMENTED: [Code; 2] = [Code::InvalidArgument, Code::ResourceExhausted];

fn special() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -50.0f64..50.0,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::MAX),
        1 => Just(-f64::MAX),
        1 => Just(1e-310),
        1 => Just(-0.0),
    ]
}

prop_compose! {
    fn tensor()(
        shape in prop::collection::vec(prop_oneof![8 => 0u32..5, 1 => Just(u32::MAX), 1 => 5u32..70_000], 0..4),
        n in 0usize..40,
        fit in any::<bool>(),
        field in 0u8..6,
        vals in prop::collection::vec(special(), 40),
        junk in prop::collection::vec(any::<u8>(), 0..20),
    ) -> Tensor {
        // Half the time the value count matches the shape, so that the
        // value checks and the kernels are reached, not only shape checks.
        let product = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d as usize));
        let n = match product {
            Some(p) if fit && p <= 40 => p,
            _ => n,
        };
        let vals: Vec<f64> = vals.into_iter().take(n).collect();
        let mut t = Tensor { shape, ..Default::default() };
        match field {
            0 => t.f32 = vals.iter().map(|&v| v as f32).collect(),
            1 => t.f64 = vals,
            2 => t.f32_le = Bytes::from(vals.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect::<Vec<u8>>()),
            3 => t.f64_le = Bytes::from(vals.iter().flat_map(|&v| v.to_le_bytes()).collect::<Vec<u8>>()),
            4 => { t.f32 = vals.iter().map(|&v| v as f32).collect(); t.f64_le = Bytes::from(junk); }
            _ => t.f32_le = Bytes::from(junk),
        }
        t
    }
}

fn temperature() -> impl Strategy<Value = Option<f32>> {
    prop_oneof![
        3 => Just(None),
        2 => (0.01f32..10.0).prop_map(Some),
        1 => prop_oneof![Just(0.0f32), Just(-1.0), Just(f32::NAN), Just(f32::INFINITY), Just(1e-45), Just(f32::MAX)].prop_map(Some),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn service() -> Softmax {
    // A small message limit so that size checks are exercised too.
    Softmax::new(Config {
        max_message_bytes: 1 << 20,
        parallel_threshold: 64,
        ..Config::default()
    })
}

fn check<T>(r: Result<tonic::Response<T>, tonic::Status>) {
    if let Err(s) = r {
        assert!(
            DOCUMENTED.contains(&s.code()),
            "undocumented status {:?}: {}",
            s.code(),
            s.message()
        );
        assert!(!s.message().is_empty());
    }
}

async fn still_serves(svc: &Softmax) {
    let good = ForwardRequest {
        logits: Some(Tensor {
            shape: vec![2],
            f32: vec![0.0, 0.0],
            ..Default::default()
        }),
        temperature: None,
        log: false,
    };
    let out = svc
        .forward(Request::new(good))
        .await
        .expect("good request")
        .into_inner();
    assert_eq!(out.output.unwrap().f32, vec![0.5, 0.5]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_get_documented_statuses(
        a in proptest::option::weighted(0.9, tensor()),
        b in proptest::option::weighted(0.5, tensor()),
        c in proptest::option::weighted(0.5, tensor()),
        t in temperature(),
        log in any::<bool>(),
        labels in prop::collection::vec(prop_oneof![0u32..6, Just(u32::MAX)], 0..6),
    ) {
        let rt = runtime();
        let svc = service();
        rt.block_on(async {
            check(svc.forward(Request::new(ForwardRequest { logits: a.clone(), temperature: t, log })).await);
            check(svc.backward(Request::new(BackwardRequest { output: a.clone(), logits: b.clone(), grad_output: c.clone(), temperature: t, log })).await);
            check(svc.backward(Request::new(BackwardRequest { output: None, logits: a.clone(), grad_output: b.clone(), temperature: t, log })).await);
            check(svc.jacobian(Request::new(JacobianRequest { logits: a.clone(), output: b.clone(), temperature: t, log })).await);
            check(svc.jacobian(Request::new(JacobianRequest { logits: None, output: a.clone(), temperature: t, log })).await);
            match svc.jacobian_stream(Request::new(JacobianRequest { logits: a.clone(), output: None, temperature: t, log })).await {
                Ok(stream) => {
                    use futures::StreamExt;
                    let mut stream = stream.into_inner();
                    while let Some(item) = stream.next().await {
                        check(item.map(tonic::Response::new));
                    }
                }
                Err(s) => check::<()>(Err(s)),
            }
            check(svc.cross_entropy(Request::new(CrossEntropyRequest { logits: a.clone(), labels: labels.clone(), target: None, temperature: t })).await);
            check(svc.cross_entropy(Request::new(CrossEntropyRequest { logits: a.clone(), labels, target: b.clone(), temperature: t })).await);
            still_serves(&svc).await;
        });
    }

    #[test]
    fn mutated_wire_bytes_get_documented_statuses(
        base in tensor(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let rt = runtime();
        let svc = service();
        let good = ForwardRequest { logits: Some(base), temperature: Some(1.0), log: false };
        let mut bytes = good.encode_to_vec();
        for (i, v) in flips {
            if !bytes.is_empty() {
                let at = i.index(bytes.len());
                bytes[at] ^= v;
            }
        }
        if !bytes.is_empty() {
            bytes.truncate(cut.index(bytes.len() + 1).max(1));
        }
        rt.block_on(async {
            // Bytes prost cannot decode never reach the service (tonic answers
            // INTERNAL for them); those it can must get a documented status.
            if let Ok(req) = ForwardRequest::decode(&bytes[..]) {
                check(svc.forward(Request::new(req)).await);
            }
            if let Ok(req) = BackwardRequest::decode(&bytes[..]) {
                check(svc.backward(Request::new(req)).await);
            }
            if let Ok(req) = CrossEntropyRequest::decode(&bytes[..]) {
                check(svc.cross_entropy(Request::new(req)).await);
            }
            if let Ok(req) = JacobianRequest::decode(&bytes[..]) {
                check(svc.jacobian(Request::new(req)).await);
            }
            still_serves(&svc).await;
        });
    }
}
