//! Jacobian: arbitrary bytes as a JacobianRequest through the unary RPC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use softmaxd::proto::v1::softmax_service_server::SoftmaxService;
use softmaxd::proto::v1::JacobianRequest;
use softmaxd_fuzz::{block_on, check_status, check_tensor, request, service, Layout};

fuzz_target!(|data: &[u8]| {
    let Some(req) = request::<JacobianRequest>(data) else {
        return;
    };
    let primary = req.logits.as_ref().or(req.output.as_ref()).map(Layout::of);
    match block_on(service().jacobian(tonic::Request::new(req))) {
        Err(status) => check_status(&status),
        Ok(answer) => {
            let x = primary.expect("answered without a primary tensor");
            let answer = answer.into_inner();
            let mut shape = x.shape.clone();
            shape.push(x.k());
            check_tensor("jacobian", answer.jacobian.as_ref(), &shape, &x);
            assert_eq!(answer.first_row, 0);
        }
    }
});
