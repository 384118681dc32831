//! softmaxd: softmax, its backward pass, Jacobian and cross-entropy as a gRPC service.
#![deny(unsafe_code)]

pub mod kernel;
pub mod server;
pub mod service;

pub mod proto {
    //! Types and stubs generated from `proto/softmax/v1/softmax.proto`.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("softmax.v1");
    }
    /// Encoded `FileDescriptorSet` of the contract, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/softmax_descriptor.bin"));
}
