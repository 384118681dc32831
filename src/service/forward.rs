//! Forward and ForwardStream messages: softmax or log-softmax of the logits.

use super::framed::Reply;
use super::reuse::{Results, Target};
use super::run::in_blocks_from_end;
use super::tensor::{decode, Decoded, Input, Wire};
use super::validate::{check_block, inv_temperature, unexplained_suspect, Allow};
use super::{call::Call, Error, Softmax};
use crate::kernel::{self, Form, Screened};
use crate::proto::v1::{ForwardRequest, ForwardResponse, Tensor};
use ndarray::{ArrayView2, ArrayViewMut2};

impl Softmax {
    /// Serves one Forward request; raw results come back encoded when
    /// `encode` asks for it.
    pub(super) async fn forward_one(
        &self,
        req: ForwardRequest,
        call: Option<&Call>,
        encode: bool,
    ) -> Result<Reply<ForwardResponse>, Error> {
        let x = decode("logits", req.logits)?;
        if let Some(call) = call {
            call.tensor(&x);
        }
        let form = if req.log { Form::LogProbs } else { Form::Probs };
        let output = match x {
            Decoded::F32(x) => self.forward_as(x, req.temperature, form, encode).await?,
            Decoded::F64(x) => self.forward_as(x, req.temperature, form, encode).await?,
        };
        Ok(output.map(|t| ForwardResponse { output: Some(t) }))
    }

    async fn forward_as<F: Wire>(
        &self,
        x: Input<F>,
        temperature: Option<f32>,
        form: Form,
        encode: bool,
    ) -> Result<Reply<Tensor>, Error> {
        let inv_t = inv_temperature::<F>(temperature)?;
        self.check_response("output", x.len(), std::mem::size_of::<F>())?;
        let _budget = self.reserve(2 * x.len() * std::mem::size_of::<F>())?;
        self.run(x.len(), move |exec, cancel| {
            let mut x = x;
            let target = Target::of(&mut x, encode);
            let mut results = Results::new(&x, target);
            let mut scratch = Vec::new();
            in_blocks_from_end(x.rows, x.k, exec, cancel, |r, compute| {
                let (xb, ob) = results.block(r.clone(), &mut scratch)?;
                let offset = r.start * x.k;
                if !compute {
                    // A block below has failed: only its error is wanted.
                    return check_block(x.field, xb, offset, Allow::NegInf);
                }
                let xv = ArrayView2::from_shape((r.len(), x.k), xb)?;
                let ov = ArrayViewMut2::from_shape((r.len(), x.k), ob)?;
                // The kernel screens for NaN and +inf as it computes, so clean
                // blocks are read once; only a rejected one is scanned, to
                // name its first bad value.
                match kernel::forward(xv, ov, inv_t, form, exec)? {
                    Screened::Clean => Ok(()),
                    Screened::Suspect => {
                        check_block(x.field, xb, offset, Allow::NegInf)?;
                        Err(unexplained_suspect(x.field, offset))
                    }
                }
            })?;
            Ok(results.finish(&x))
        })
        .await
    }
}
