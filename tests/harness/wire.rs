//! Building request tensors and reading response tensors in every dtype
//! and encoding.

use bytes::Bytes;
use softmaxd::proto::v1::Tensor;

/// A dtype and an encoding to send values in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    F32Typed,
    F64Typed,
    F32Raw,
    F64Raw,
}

pub const ALL_KINDS: [Kind; 4] = [Kind::F32Typed, Kind::F64Typed, Kind::F32Raw, Kind::F64Raw];

impl Kind {
    pub fn is_f32(self) -> bool {
        matches!(self, Kind::F32Typed | Kind::F32Raw)
    }

    /// Tolerance for comparing against the f64 reference.
    pub fn tol(self) -> f64 {
        if self.is_f32() {
            2e-6
        } else {
            1e-12
        }
    }

    /// The values rounded to this kind's dtype, as f64 (what the server sees).
    pub fn round(self, v: &[f64]) -> Vec<f64> {
        if self.is_f32() {
            v.iter().map(|&x| x as f32 as f64).collect()
        } else {
            v.to_vec()
        }
    }
}

/// A tensor holding `v` with `shape` in kind `kind`.
pub fn tensor(shape: &[u32], v: &[f64], kind: Kind) -> Tensor {
    let mut t = Tensor {
        shape: shape.to_vec(),
        ..Default::default()
    };
    match kind {
        Kind::F32Typed => t.f32 = v.iter().map(|&x| x as f32).collect(),
        Kind::F64Typed => t.f64 = v.to_vec(),
        Kind::F32Raw => {
            t.f32_le = Bytes::from(
                v.iter()
                    .flat_map(|&x| (x as f32).to_le_bytes())
                    .collect::<Vec<u8>>(),
            )
        }
        Kind::F64Raw => {
            t.f64_le = Bytes::from(v.iter().flat_map(|&x| x.to_le_bytes()).collect::<Vec<u8>>())
        }
    }
    t
}

/// The kind a response tensor was sent in, and its values as f64.
pub fn read(t: &Tensor) -> (Kind, Vec<f64>) {
    let set = [
        !t.f32.is_empty(),
        !t.f64.is_empty(),
        !t.f32_le.is_empty(),
        !t.f64_le.is_empty(),
    ];
    assert!(
        set.iter().filter(|&&s| s).count() <= 1,
        "more than one value field set"
    );
    if !t.f32.is_empty() {
        (Kind::F32Typed, t.f32.iter().map(|&x| x as f64).collect())
    } else if !t.f64.is_empty() {
        (Kind::F64Typed, t.f64.clone())
    } else if !t.f32_le.is_empty() {
        assert_eq!(t.f32_le.len() % 4, 0);
        let v = t
            .f32_le
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect();
        (Kind::F32Raw, v)
    } else if !t.f64_le.is_empty() {
        assert_eq!(t.f64_le.len() % 8, 0);
        let v = t
            .f64_le
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (Kind::F64Raw, v)
    } else {
        (Kind::F32Typed, Vec::new())
    }
}

/// Reads a response tensor, checking its shape and that it came back in `kind`.
pub fn expect(t: Option<Tensor>, shape: &[u32], kind: Kind) -> Vec<f64> {
    let t = t.expect("response tensor missing");
    assert_eq!(t.shape, shape, "response shape");
    let (got, v) = read(&t);
    if !v.is_empty() {
        assert_eq!(got, kind, "response kind");
    }
    v
}
