//! CrossEntropy: arbitrary bytes as a CrossEntropyRequest through the service.
#![no_main]

use libfuzzer_sys::fuzz_target;
use softmaxd::proto::v1::softmax_service_server::SoftmaxService;
use softmaxd::proto::v1::CrossEntropyRequest;
use softmaxd_fuzz::{block_on, check_status, check_tensor, request, service, values, Layout};

fuzz_target!(|data: &[u8]| {
    let Some(req) = request::<CrossEntropyRequest>(data) else {
        return;
    };
    let x = req.logits.as_ref().map(Layout::of);
    match block_on(service().cross_entropy(tonic::Request::new(req))) {
        Err(status) => check_status(&status),
        Ok(answer) => {
            let x = x.expect("answered without logits");
            let answer = answer.into_inner();
            let loss = check_tensor("loss", answer.loss.as_ref(), x.batch(), &x);
            check_tensor("grad_logits", answer.grad_logits.as_ref(), &x.shape, &x);
            // -sum y_i log s_i with y >= 0 and s <= 1: never negative, never
            // NaN (+inf when a labelled entry is masked).
            for l in values(loss) {
                assert!(l >= 0.0, "loss {l}");
            }
        }
    }
});
