//! The SoftmaxService endpoint with the server's limits and compression,
//! shared by the real service and the echo (identity) one.

use super::Config;
use crate::proto::v1::softmax_service_server::{SoftmaxService, SoftmaxServiceServer};
use tonic::codec::CompressionEncoding;

/// Wraps `service` with the message limits and compression `config` asks for.
pub(super) fn endpoint<S: SoftmaxService>(service: S, config: &Config) -> SoftmaxServiceServer<S> {
    let endpoint = SoftmaxServiceServer::new(service)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    if config.compress_responses {
        endpoint
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
    } else {
        endpoint
    }
}
