//! Forward: arbitrary bytes as a ForwardRequest through the service.
#![no_main]

use libfuzzer_sys::fuzz_target;
use softmaxd::proto::v1::softmax_service_server::SoftmaxService;
use softmaxd::proto::v1::ForwardRequest;
use softmaxd_fuzz::{block_on, check_status, check_tensor, request, service, values, Layout};

fuzz_target!(|data: &[u8]| {
    let Some(req) = request::<ForwardRequest>(data) else {
        return;
    };
    let x = req.logits.as_ref().map(Layout::of);
    let log = req.log;
    match block_on(service().forward(tonic::Request::new(req))) {
        Err(status) => check_status(&status),
        Ok(answer) => {
            let x = x.expect("answered without logits");
            let answer = answer.into_inner();
            let out = check_tensor("output", answer.output.as_ref(), &x.shape, &x);
            // Probabilities lie in [0, 1], log-probabilities at or below 0
            // (-inf where masked); NaN is neither.
            for v in values(out) {
                let ok = if log {
                    v <= 1e-6
                } else {
                    (0.0..=1.0 + 1e-6).contains(&v)
                };
                assert!(ok, "output value {v} (log: {log})");
            }
        }
    }
});
