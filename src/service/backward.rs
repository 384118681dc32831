//! Backward: the vector-Jacobian product from the Forward output or logits.

use super::framed::Reply;
use super::reuse::{Results, Target};
use super::run::in_blocks_from_end;
use super::tensor::{decode, decode_same, Decoded, Input, Wire};
use super::validate::{check_block, check_values, inv_temperature, Allow};
use super::{call::Call, Error, Softmax};
use crate::kernel::{self, Exec, Form, Screened};
use crate::proto::v1::{BackwardRequest, BackwardResponse, Tensor};
use ndarray::{ArrayView2, ArrayViewMut2};

/// Which primary tensor a Backward or Jacobian request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum From {
    /// The Forward output (probabilities or log-probabilities).
    Output,
    /// The logits, from which the output is recomputed.
    Logits,
}

/// Picks the one primary tensor of a request that takes `output` or `logits`.
pub(super) fn primary(
    output: Option<Tensor>,
    logits: Option<Tensor>,
) -> Result<(From, Decoded), Error> {
    match (output, logits) {
        (Some(s), None) => Ok((From::Output, decode("output", Some(s))?)),
        (None, Some(x)) => Ok((From::Logits, decode("logits", Some(x))?)),
        (Some(_), Some(_)) => Err(Error::invalid(
            "output, logits: set exactly one of them, not both",
        )),
        (None, None) => Err(Error::invalid(
            "output, logits: missing tensor (set exactly one of them)",
        )),
    }
}

/// Checks the values of a primary tensor: logits and log-probabilities may
/// hold `-inf` masks, probabilities must be finite.
pub(super) fn check_primary<F: Wire>(x: &Input<F>, from: From, form: Form) -> Result<(), Error> {
    check_values(x, primary_allows(from, form))
}

/// The non-finite values the primary tensor may hold: probabilities must be
/// finite, logits and log-probabilities may hold `-inf` masks.
fn primary_allows(from: From, form: Form) -> Allow {
    match (from, form) {
        (From::Output, Form::Probs) => Allow::FiniteOnly,
        _ => Allow::NegInf,
    }
}

impl Softmax {
    /// Serves one Backward request; raw results come back encoded when
    /// `encode` asks for it.
    pub(super) async fn backward_one(
        &self,
        req: BackwardRequest,
        call: &Call,
        encode: bool,
    ) -> Result<Reply<BackwardResponse>, Error> {
        let (from, x) = primary(req.output, req.logits)?;
        call.tensor(&x);
        let form = if req.log { Form::LogProbs } else { Form::Probs };
        let (g, t) = (req.grad_output, req.temperature);
        let grad = match x {
            Decoded::F32(x) => self.backward_as(x, from, g, t, form, encode).await?,
            Decoded::F64(x) => self.backward_as(x, from, g, t, form, encode).await?,
        };
        Ok(grad.map(|t| BackwardResponse {
            grad_logits: Some(t),
        }))
    }

    async fn backward_as<F: Wire>(
        &self,
        x: Input<F>,
        from: From,
        grad_output: Option<Tensor>,
        temperature: Option<f32>,
        form: Form,
        encode: bool,
    ) -> Result<Reply<Tensor>, Error> {
        let g = decode_same::<F>("grad_output", grad_output)?;
        x.same_shape(&g)?;
        let inv_t = inv_temperature::<F>(temperature)?;
        self.check_response("grad_logits", x.len(), std::mem::size_of::<F>())?;
        let _budget = self.reserve(3 * x.len() * std::mem::size_of::<F>())?;
        let allow = primary_allows(from, form);
        self.run(x.len(), move |exec, cancel| {
            let mut x = x;
            // The results go into the encoded response, or over the primary
            // tensor's request bytes, if they can.
            let target = Target::of(&mut x, encode);
            let mut results = Results::new(&x, target);
            let (mut xs, mut gs) = (Vec::new(), Vec::new());
            in_blocks_from_end(x.rows, x.k, exec, cancel, |r, compute| {
                let (xb, ob) = results.block(r.clone(), &mut xs)?;
                let gb = g.block(r.clone(), &mut gs)?;
                let check = || {
                    check_block(x.field, xb, r.start * x.k, allow)?;
                    check_block(g.field, gb, r.start * x.k, Allow::FiniteOnly)
                };
                if !compute {
                    // A block below has failed: only its error is wanted.
                    return check();
                }
                // The kernel screens the values as it computes; a block is
                // scanned only when it is suspect. Its inputs are still there
                // (results never go over the block being read).
                let ob = ArrayViewMut2::from_shape((r.len(), x.k), ob)?;
                match backward_block(from, xb, gb, ob, inv_t, form, exec)? {
                    Screened::Clean => Ok(()),
                    // Clean after all (finite products that overflowed, or
                    // log-probabilities, which are not screened): the
                    // results stand.
                    Screened::Suspect => check(),
                }
            })?;
            Ok(results.finish(&x))
        })
        .await
    }
}

/// The vector-Jacobian product of one block of rows, shaped as `out`.
fn backward_block<F: Wire>(
    from: From,
    x: &[F],
    g: &[F],
    out: ArrayViewMut2<'_, F>,
    inv_t: F,
    form: Form,
    exec: Exec,
) -> Result<Screened, Error> {
    let x = ArrayView2::from_shape(out.dim(), x)?;
    let g = ArrayView2::from_shape(out.dim(), g)?;
    Ok(match from {
        From::Output => kernel::backward(x, g, out, inv_t, form, exec)?,
        From::Logits => kernel::backward_from_logits(x, g, out, inv_t, form, exec)?,
    })
}
