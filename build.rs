//! Compiles the wire contract with protox (pure Rust, no system protoc) and
//! writes the descriptor set that server reflection serves.
use prost::Message;
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/softmax/v1/softmax.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("softmax_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Raw tensor bytes are decoded as `bytes::Bytes`: a slice of the
        // receive buffer, not a copy.
        .bytes(".softmax.v1.Tensor")
        // Tensor is written by hand (src/proto/tensor.rs) to move its packed
        // float fields as whole slices.
        .extern_path(".softmax.v1.Tensor", "crate::proto::tensor::Tensor")
        .compile_fds(fds)?;
    Ok(())
}
