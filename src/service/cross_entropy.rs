//! CrossEntropy: fused loss and gradient against labels or a target
//! distribution.

use super::framed::{Framed, Reply};
use super::run::in_blocks;
use super::tensor::{decode, decode_same, to_tensor, Decoded, Input, Wire};
use super::validate::{
    check_block, check_labels, check_target, inv_temperature, unexplained_suspect, Allow,
};
use super::{call::Call, Error, Softmax};
use crate::kernel::{self, Screened, Target};
use crate::proto::v1::{CrossEntropyRequest, CrossEntropyResponse, Tensor};
use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

/// What the loss is taken against, decoded.
enum Against<F: Wire> {
    Labels(Vec<u32>),
    Dist(Input<F>),
}

impl Softmax {
    /// Serves one CrossEntropy request; the answer comes back encoded when
    /// `encode` asks for it.
    pub(super) async fn cross_entropy_one(
        &self,
        req: CrossEntropyRequest,
        call: &Call,
        encode: bool,
    ) -> Result<Reply<CrossEntropyResponse>, Error> {
        let x = decode("logits", req.logits)?;
        call.tensor(&x);
        let (labels, target, t) = (req.labels, req.target, req.temperature);
        match x {
            Decoded::F32(x) => self.cross_entropy_as(x, labels, target, t, encode).await,
            Decoded::F64(x) => self.cross_entropy_as(x, labels, target, t, encode).await,
        }
    }

    async fn cross_entropy_as<F: Wire>(
        &self,
        x: Input<F>,
        labels: Vec<u32>,
        target: Option<Tensor>,
        temperature: Option<f32>,
        encode: bool,
    ) -> Result<Reply<CrossEntropyResponse>, Error> {
        let against = match (labels.is_empty(), target) {
            (false, Some(_)) => {
                return Err(Error::invalid(
                    "labels, target: set exactly one of them, not both",
                ))
            }
            (true, Some(t)) => {
                let y = decode_same::<F>("target", Some(t))?.contiguous();
                x.same_shape(&y)?;
                check_target(&y)?;
                Against::Dist(y)
            }
            // No labels is valid for an empty batch: zero vectors, zero labels.
            (_, None) if labels.is_empty() && !x.is_empty() => {
                return Err(Error::invalid(
                    "labels, target: missing (set exactly one of them)",
                ))
            }
            (_, None) => {
                check_labels(&labels, x.rows, x.k)?;
                Against::Labels(labels)
            }
        };
        let inv_t = inv_temperature::<F>(temperature)?;
        let width = std::mem::size_of::<F>();
        self.check_response("grad_logits", x.len().saturating_add(x.rows), width)?;
        let inputs = if matches!(against, Against::Dist(_)) {
            2
        } else {
            1
        };
        let _budget = self.reserve((inputs + 1) * x.len() * width)?;
        self.run(x.len(), move |exec, cancel| {
            let shape = (x.rows, x.k);
            let mut loss = vec![F::zero(); x.rows];
            // The gradient goes straight into the encoded answer when it
            // can (the losses follow once known), else into a buffer.
            let mut framed = encode
                .then(|| {
                    let (loss_shape, grad_shape) = (x.batch_dims(), x.wire_dims());
                    Framed::cross_entropy(&loss_shape, x.rows, &grad_shape, x.len(), x.encoding)
                })
                .flatten();
            let mut owned = Vec::new();
            let grad = match &mut framed {
                Some(f) => f.values_mut(),
                None => {
                    owned = F::pool().take(x.len());
                    &mut owned[..]
                }
            };
            let mut lv = ArrayViewMut1::from(&mut loss[..]);
            let mut gv = ArrayViewMut2::from_shape(shape, grad)?;
            let dist = match &against {
                Against::Labels(_) => None,
                Against::Dist(y) => Some(ArrayView2::from_shape(shape, y.values()?)?),
            };
            // Raw logits are read a row block at a time (copied into a
            // cache-sized scratch when unaligned), never as a whole copy.
            let mut xs = Vec::new();
            in_blocks(x.rows, x.k, exec, cancel, |r| {
                let values = x.block(r.clone(), &mut xs)?;
                let target = match (&against, &dist) {
                    (Against::Labels(l), _) => Target::Labels(l.get(r.clone()).unwrap_or_default()),
                    (_, Some(y)) => Target::Dist(y.slice_axis(Axis(0), r.clone().into())),
                    (Against::Dist(_), None) => {
                        return Err(Error::Internal("target view missing".into()))
                    }
                };
                let (xb, gb) = (
                    ArrayView2::from_shape((r.len(), x.k), values)?,
                    gv.slice_axis_mut(Axis(0), r.clone().into()),
                );
                let lb = lv.slice_axis_mut(Axis(0), r.clone().into());
                // The kernel screens the logits as it computes; only a
                // suspect block is scanned, to name its first bad value.
                match kernel::cross_entropy(xb, target, lb, gb, inv_t, exec)? {
                    Screened::Clean => Ok(()),
                    Screened::Suspect => {
                        let offset = r.start * x.k;
                        check_block(x.field, values, offset, Allow::NegInf)?;
                        Err(unexplained_suspect(x.field, offset))
                    }
                }
            })?;
            if let Some(mut f) = framed {
                f.set_leading(&loss)?;
                return Ok(Reply::Encoded(f.finish()));
            }
            Ok(Reply::Message(CrossEntropyResponse {
                loss: Some(to_tensor(x.batch_dims(), loss, x.encoding)),
                grad_logits: Some(to_tensor(x.wire_dims(), owned, x.encoding)),
            }))
        })
        .await
    }
}
