//! Backward: arbitrary bytes as a BackwardRequest through the service.
#![no_main]

use libfuzzer_sys::fuzz_target;
use softmaxd::proto::v1::softmax_service_server::SoftmaxService;
use softmaxd::proto::v1::BackwardRequest;
use softmaxd_fuzz::{block_on, check_status, check_tensor, request, service, Layout};

fuzz_target!(|data: &[u8]| {
    let Some(req) = request::<BackwardRequest>(data) else {
        return;
    };
    let primary = req.output.as_ref().or(req.logits.as_ref()).map(Layout::of);
    match block_on(service().backward(tonic::Request::new(req))) {
        Err(status) => check_status(&status),
        Ok(answer) => {
            let x = primary.expect("answered without a primary tensor");
            let answer = answer.into_inner();
            check_tensor("grad_logits", answer.grad_logits.as_ref(), &x.shape, &x);
        }
    }
});
