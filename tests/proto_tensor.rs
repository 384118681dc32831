//! The hand-written `Tensor` (src/proto/tensor.rs) against prost-generated
//! twins of the proto message: same bytes out, same values in, for packed
//! and unpacked encodings, buffers split anywhere, and malformed input.

use bytes::{Buf, Bytes};
use proptest::prelude::*;
use prost::Message;
use softmaxd::proto::v1::Tensor;

/// `softmax.v1.Tensor` as prost generates it.
#[derive(Clone, PartialEq, prost::Message)]
struct Twin {
    #[prost(uint32, repeated, tag = "1")]
    shape: Vec<u32>,
    #[prost(float, repeated, tag = "2")]
    f32: Vec<f32>,
    #[prost(double, repeated, tag = "3")]
    f64: Vec<f64>,
    #[prost(bytes = "bytes", tag = "4")]
    f32_le: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    f64_le: Bytes,
    #[prost(string, tag = "9")]
    unknown_to_tensor: String,
}

/// The same fields written unpacked (one key per value), as proto2-era
/// encoders may send them; proto3 parsers must accept both.
#[derive(Clone, PartialEq, prost::Message)]
struct Unpacked {
    #[prost(uint32, repeated, packed = "false", tag = "1")]
    shape: Vec<u32>,
    #[prost(float, repeated, packed = "false", tag = "2")]
    f32: Vec<f32>,
    #[prost(double, repeated, packed = "false", tag = "3")]
    f64: Vec<f64>,
}

fn twin(t: &Tensor) -> Twin {
    Twin {
        shape: t.shape.clone(),
        f32: t.f32.clone(),
        f64: t.f64.clone(),
        f32_le: t.f32_le.clone(),
        f64_le: t.f64_le.clone(),
        unknown_to_tensor: String::new(),
    }
}

fn tensors() -> impl Strategy<Value = Tensor> {
    (
        prop::collection::vec(any::<u32>(), 0..5),
        prop::collection::vec(any::<f32>(), 0..300),
        prop::collection::vec(any::<f64>(), 0..100),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(shape, f32, f64, a, b)| Tensor {
            shape,
            f32,
            f64,
            f32_le: a.into(),
            f64_le: b.into(),
        })
}

/// Bit-level equality (NaN payloads included), which `PartialEq` is not.
fn same(a: &Tensor, b: &Twin) -> bool {
    let bits32 = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let bits64 = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    a.shape == b.shape
        && bits32(&a.f32) == bits32(&b.f32)
        && bits64(&a.f64) == bits64(&b.f64)
        && a.f32_le == b.f32_le
        && a.f64_le == b.f64_le
}

proptest! {
    #[test]
    fn encodes_exactly_as_prost(t in tensors()) {
        let ours = t.encode_to_vec();
        prop_assert_eq!(&ours, &twin(&t).encode_to_vec());
        prop_assert_eq!(ours.len(), t.encoded_len());
    }

    #[test]
    fn decodes_what_prost_encodes(t in tensors(), split in 0usize..4000) {
        let mut tw = twin(&t);
        tw.unknown_to_tensor = "skipped".into();
        let wire = tw.encode_to_vec();
        let back = Tensor::decode(wire.as_slice()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(same(&back, &twin(&t)));
        // The same bytes as two chunks split anywhere, values straddling.
        let at = split.min(wire.len());
        let (a, b) = wire.split_at(at);
        let chained = a.chain(b);
        let back = Tensor::decode(chained).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(same(&back, &twin(&t)));
    }

    #[test]
    fn decodes_unpacked_values(shape in prop::collection::vec(any::<u32>(), 0..4),
                               f32 in prop::collection::vec(any::<f32>(), 0..50),
                               f64 in prop::collection::vec(any::<f64>(), 0..50)) {
        let wire = Unpacked { shape: shape.clone(), f32: f32.clone(), f64: f64.clone() }.encode_to_vec();
        let back = Tensor::decode(wire.as_slice()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = Tensor { shape, f32, f64, ..Tensor::default() };
        prop_assert!(same(&back, &twin(&want)));
    }
}

#[test]
fn repeated_packed_fields_concatenate() {
    let a = Twin {
        f32: vec![1.0, 2.0],
        ..Twin::default()
    }
    .encode_to_vec();
    let b = Twin {
        f32: vec![3.0],
        ..Twin::default()
    }
    .encode_to_vec();
    let back = Tensor::decode([a, b].concat().as_slice()).expect("valid");
    assert_eq!(back.f32, vec![1.0, 2.0, 3.0]);
}

#[test]
fn malformed_packed_fields_are_errors() {
    // Key of field 2 (packed floats), then a length.
    for (wire, what) in [
        (vec![0x12, 0x03, 0, 0, 0], "length not a multiple of 4"),
        (vec![0x12, 0x08, 0, 0, 0, 0], "length past the end"),
        (
            vec![0x1a, 0x04, 0, 0, 0, 0],
            "f64 length not a multiple of 8",
        ),
        (vec![0x12], "missing length"),
    ] {
        assert!(Tensor::decode(wire.as_slice()).is_err(), "{what}");
    }
}
