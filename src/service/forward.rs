//! Forward and ForwardStream messages: softmax or log-softmax of the logits.

use super::reuse::Reused;
use super::run::{in_blocks, in_blocks_from_end, Cancel};
use super::tensor::{decode, to_tensor, Decoded, Input, Wire};
use super::validate::{check_block, inv_temperature, Allow};
use super::{call::Call, Error, Softmax};
use crate::kernel::{self, Exec, Form};
use crate::proto::v1::{ForwardRequest, ForwardResponse, Tensor};
use ndarray::{ArrayView2, ArrayViewMut2, Axis};

impl Softmax {
    /// Serves one Forward request.
    pub(super) async fn forward_one(
        &self,
        req: ForwardRequest,
        call: Option<&Call>,
    ) -> Result<ForwardResponse, Error> {
        let x = decode("logits", req.logits)?;
        if let Some(call) = call {
            call.tensor(&x);
        }
        let form = if req.log { Form::LogProbs } else { Form::Probs };
        let output = match x {
            Decoded::F32(x) => self.forward_as(x, req.temperature, form).await?,
            Decoded::F64(x) => self.forward_as(x, req.temperature, form).await?,
        };
        Ok(ForwardResponse {
            output: Some(output),
        })
    }

    async fn forward_as<F: Wire>(
        &self,
        x: Input<F>,
        temperature: Option<f32>,
        form: Form,
    ) -> Result<Tensor, Error> {
        let inv_t = inv_temperature::<F>(temperature)?;
        self.check_response("output", x.len(), std::mem::size_of::<F>())?;
        let _budget = self.reserve(2 * x.len() * std::mem::size_of::<F>())?;
        self.run(x.len(), move |exec, cancel| {
            let mut x = x;
            if let Some(reused) = x.take_reused() {
                return forward_reused(&x, reused, inv_t, form, exec, cancel);
            }
            let mut out = F::pool().take(x.len());
            let mut ov = ArrayViewMut2::from_shape((x.rows, x.k), &mut out)?;
            let mut scratch = Vec::new();
            // Values are checked block by block, just before the kernel reads
            // the same block from cache.
            in_blocks(x.rows, x.k, exec, cancel, |r| {
                let xb = x.block(r.clone(), &mut scratch)?;
                check_block(x.field, xb, r.start * x.k, Allow::NegInf)?;
                let xb = ArrayView2::from_shape((r.len(), x.k), xb)?;
                let ob = ov.slice_axis_mut(Axis(0), r.into());
                Ok(kernel::forward(xb, ob, inv_t, form, exec)?)
            })?;
            Ok(to_tensor(x.wire_dims(), out, x.encoding))
        })
        .await
    }
}

/// Forward with the results written over the raw request bytes of `x`
/// (which `reused` now holds).
fn forward_reused<F: Wire>(
    x: &Input<F>,
    mut reused: Reused<F>,
    inv_t: F,
    form: Form,
    exec: Exec,
    cancel: &Cancel,
) -> Result<Tensor, Error> {
    let mut scratch = Vec::new();
    in_blocks_from_end(x.rows, x.k, exec, cancel, |r, compute| {
        let (xb, ob) = reused.block(r.start * x.k..r.end * x.k, &mut scratch)?;
        check_block(x.field, xb, r.start * x.k, Allow::NegInf)?;
        if compute {
            let xb = ArrayView2::from_shape((r.len(), x.k), xb)?;
            let ob = ArrayViewMut2::from_shape((r.len(), x.k), ob)?;
            kernel::forward(xb, ob, inv_t, form, exec)?;
        }
        Ok(())
    })?;
    Ok(reused.into_tensor(x.wire_dims()))
}
