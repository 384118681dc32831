//! softmaxd: softmax, its backward pass, Jacobian and cross-entropy as a gRPC service.
// Unsafe code lives only in `kernel::simd` (SIMD intrinsics); everywhere
// else it is forbidden, which no inner `allow` can undo. Library code may not
// unwrap, expect or index (a panic on bad input would drop the call); unit
// tests may.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

// The load tool, not request handling: its one `expect` is on a constant.
#[forbid(unsafe_code)]
#[allow(clippy::expect_used)]
pub mod bench;
#[forbid(unsafe_code)]
pub mod client;
pub mod kernel;
#[forbid(unsafe_code)]
pub mod server;
#[forbid(unsafe_code)]
pub mod service;

#[forbid(unsafe_code)]
pub mod proto {
    //! Types and stubs generated from `proto/softmax/v1/softmax.proto`.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("softmax.v1");
        pub use super::tensor::Tensor;
    }
    pub(crate) mod tensor;
    /// Encoded `FileDescriptorSet` of the contract, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/softmax_descriptor.bin"));
}
