//! JacobianStream: arbitrary bytes as a JacobianRequest, every message of
//! the stream read and checked.
#![no_main]

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use softmaxd::proto::v1::softmax_service_server::SoftmaxService;
use softmaxd::proto::v1::JacobianRequest;
use softmaxd_fuzz::{block_on, check_status, check_tensor, request, service, Layout};

fuzz_target!(|data: &[u8]| {
    let Some(req) = request::<JacobianRequest>(data) else {
        return;
    };
    let primary = req.logits.as_ref().or(req.output.as_ref()).map(Layout::of);
    block_on(async {
        let mut stream = match service().jacobian_stream(tonic::Request::new(req)).await {
            Err(status) => return check_status(&status),
            Ok(answer) => answer.into_inner(),
        };
        let x = primary.expect("answered without a primary tensor");
        let (rows, k) = (x.rows(), x.k());
        // Consecutive chunks of whole vectors; an empty batch gets one
        // empty message; an error ends the stream.
        let (mut next, mut messages) = (0u64, 0u32);
        while let Some(item) = stream.next().await {
            let msg = match item {
                Err(status) => return check_status(&status),
                Ok(msg) => msg,
            };
            assert_eq!(msg.first_row, next, "first_row");
            let n = msg.jacobian.as_ref().and_then(|t| t.shape.first()).copied();
            let n = n.expect("a message without its [n, k, k] shape");
            assert!(n > 0 || rows == 0, "an empty message in a non-empty batch");
            check_tensor("jacobian", msg.jacobian.as_ref(), &[n, k, k], &x);
            next += u64::from(n);
            messages += 1;
        }
        assert_eq!(next, rows, "vectors answered");
        assert!(messages >= 1, "no message at all");
    });
});
