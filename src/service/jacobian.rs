//! Jacobian and JacobianStream: one `[k, k]` matrix per vector, in one
//! message or in chunks of whole vectors computed as the client reads them.

use super::backward::{check_primary, primary, From};
use super::framed::{Framed, Reply};
use super::run::{in_blocks, Cancel};
use super::tensor::{to_tensor, Decoded, Input, Wire};
use super::validate::inv_temperature;
use super::{call::Call, Admission, Error, Softmax};
use crate::kernel::{self, Exec, Form};
use crate::proto::v1::{JacobianRequest, JacobianResponse, Tensor};
use futures::StreamExt;
use ndarray::{ArrayView2, ArrayViewMut3, Axis};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// A validated Jacobian request, ready to compute any range of vectors.
#[derive(Debug)]
pub(super) struct Job<F: Wire> {
    x: Input<F>,
    from: From,
    form: Form,
    inv_t: F,
}

impl<F: Wire> Job<F> {
    fn new(x: Input<F>, from: From, req_t: Option<f32>, log: bool) -> Result<Self, Error> {
        let form = if log { Form::LogProbs } else { Form::Probs };
        let inv_t = inv_temperature::<F>(req_t)?;
        // The input is tiny next to its Jacobian: one copy costs nothing.
        let x = x.contiguous();
        check_primary(&x, from, form)?;
        Ok(Self {
            x,
            from,
            form,
            inv_t,
        })
    }

    /// Values in the Jacobian of `rows` vectors (checked against overflow).
    fn elements(&self, rows: usize) -> Option<usize> {
        rows.checked_mul(self.x.k)?.checked_mul(self.x.k)
    }

    /// The Jacobians of vectors `first..first + n`, as a flat vector.
    fn compute(
        &self,
        first: usize,
        n: usize,
        exec: Exec,
        cancel: &Cancel,
    ) -> Result<Vec<F>, Error> {
        let len = self
            .elements(n)
            .ok_or_else(|| Error::Internal("jacobian size overflow".into()))?;
        let mut out = F::pool().take(len);
        self.compute_into(first, n, &mut out, exec, cancel)?;
        Ok(out)
    }

    /// The Jacobians of vectors `first..first + n`, of `shape`: computed
    /// straight into `framed`, an encoded answer, when there is one (the
    /// Jacobian is k times the input, and copying it into a message after
    /// the kernel was 30% of a [4,1000] call), else into a tensor.
    fn answer(
        &self,
        first: usize,
        n: usize,
        shape: Vec<u32>,
        framed: Option<Framed<F>>,
        exec: Exec,
        cancel: &Cancel,
    ) -> Result<Reply<Tensor>, Error> {
        if let Some(mut framed) = framed {
            self.compute_into(first, n, framed.values_mut(), exec, cancel)?;
            return Ok(Reply::Encoded(framed.finish()));
        }
        let out = self.compute(first, n, exec, cancel)?;
        Ok(Reply::Message(to_tensor(shape, out, self.x.encoding)))
    }

    /// The Jacobians of vectors `first..first + n`, written into `out`.
    fn compute_into(
        &self,
        first: usize,
        n: usize,
        out: &mut [F],
        exec: Exec,
        cancel: &Cancel,
    ) -> Result<(), Error> {
        let k = self.x.k;
        let rows = self
            .x
            .values()?
            .get(first * k..(first + n) * k)
            .ok_or_else(|| Error::Internal("jacobian chunk out of range".into()))?;
        let xv = ArrayView2::from_shape((n, k), rows)?;
        let mut ov = ArrayViewMut3::from_shape((n, k, k), out)?;
        in_blocks(n, k.saturating_mul(k), exec, cancel, |r| {
            let (xb, ob) = (
                xv.slice_axis(Axis(0), r.clone().into()),
                ov.slice_axis_mut(Axis(0), r.into()),
            );
            match self.from {
                From::Output => kernel::jacobian(xb, ob, self.inv_t, self.form, exec)?,
                From::Logits => kernel::jacobian_from_logits(xb, ob, self.inv_t, self.form, exec)?,
            }
            Ok(())
        })
    }
}

/// A validated request of either dtype.
enum AnyJob {
    F32(Job<f32>),
    F64(Job<f64>),
}

fn job(req: JacobianRequest, call: &Call) -> Result<AnyJob, Error> {
    let (from, x) = primary(req.output, req.logits)?;
    call.tensor(&x);
    Ok(match x {
        Decoded::F32(x) => AnyJob::F32(Job::new(x, from, req.temperature, req.log)?),
        Decoded::F64(x) => AnyJob::F64(Job::new(x, from, req.temperature, req.log)?),
    })
}

/// The messages of a JacobianStream, each encoded already if asked to be.
pub type JacobianAnswers = ReceiverStream<Result<Reply<JacobianResponse>, Status>>;

/// The stream JacobianStream answers with through tonic.
pub type JacobianStream = futures::stream::Map<
    JacobianAnswers,
    fn(Result<Reply<JacobianResponse>, Status>) -> Result<JacobianResponse, Status>,
>;

/// The messages of a stream that was not asked to encode them, for tonic.
pub(super) fn unencoded(answers: JacobianAnswers) -> JacobianStream {
    answers.map(message as fn(_) -> _)
}

/// A message of a stream that was not asked to be encoded.
fn message(reply: Result<Reply<JacobianResponse>, Status>) -> Result<JacobianResponse, Status> {
    reply.and_then(|r| r.into_message().map_err(Status::from))
}

impl Softmax {
    /// Serves one unary Jacobian request; the answer comes back encoded
    /// when `encode` asks for it.
    pub(super) async fn jacobian_one(
        &self,
        req: JacobianRequest,
        call: &Call,
        encode: bool,
    ) -> Result<Reply<JacobianResponse>, Error> {
        let jacobian = match job(req, call)? {
            AnyJob::F32(j) => self.jacobian_as(j, encode).await?,
            AnyJob::F64(j) => self.jacobian_as(j, encode).await?,
        };
        // `first_row` is 0 in a unary answer, which proto3 leaves out: an
        // encoded answer is the tensor's field alone, as Framed writes it.
        Ok(jacobian.map(|t| JacobianResponse {
            jacobian: Some(t),
            first_row: 0,
        }))
    }

    async fn jacobian_as<F: Wire>(
        &self,
        job: Job<F>,
        encode: bool,
    ) -> Result<Reply<Tensor>, Error> {
        let rows = job.x.rows;
        let elements = job.elements(rows).unwrap_or(usize::MAX);
        let width = std::mem::size_of::<F>();
        // Even an empty batch must have a representable [k, k] matrix shape.
        self.check_response("jacobian", elements, width)?;
        let per_vector = job.elements(1).unwrap_or(usize::MAX);
        self.check_response("jacobian (one vector)", per_vector, width)?;
        let _budget = self.reserve((elements + job.x.len()) * width)?;
        self.run(elements, move |exec, cancel| {
            let mut shape = job.x.batch_dims();
            shape.extend([job.x.k as u32, job.x.k as u32]);
            let framed = encode
                .then(|| Framed::new(&shape, elements, job.x.encoding))
                .flatten();
            job.answer(0, rows, shape, framed, exec, cancel)
        })
        .await
    }

    /// Validates a JacobianStream request and starts producing its
    /// messages, raw ones encoded when `encode` asks for it.
    pub(super) fn jacobian_answers_start(
        &self,
        req: JacobianRequest,
        call: &Call,
        admitted: Admission,
        encode: bool,
    ) -> Result<JacobianAnswers, Error> {
        // Two messages in flight at most: the producer waits for the client.
        let (tx, rx) = mpsc::channel(2);
        match job(req, call)? {
            AnyJob::F32(j) => self.spawn_stream(j, tx, admitted, encode)?,
            AnyJob::F64(j) => self.spawn_stream(j, tx, admitted, encode)?,
        }
        Ok(ReceiverStream::new(rx))
    }

    fn spawn_stream<F: Wire>(
        &self,
        job: Job<F>,
        tx: mpsc::Sender<Result<Reply<JacobianResponse>, Status>>,
        admitted: Admission,
        encode: bool,
    ) -> Result<(), Error> {
        let width = std::mem::size_of::<F>();
        let per_vector = job.elements(1).unwrap_or(usize::MAX);
        // A single vector must fit in one message; chunks aim at the target size.
        self.check_response("jacobian (one vector)", per_vector, width)?;
        let target = self
            .config()
            .stream_chunk_bytes
            .min(self.config().max_message_bytes.saturating_sub(1024));
        let per_msg = (target / per_vector.saturating_mul(width).max(1)).max(1);
        // The input and the messages in the channel and in computation.
        let budget = self.reserve(job.x.len() * width + 4 * per_msg * per_vector * width)?;
        let service = self.clone();
        let job = Arc::new(job);
        tokio::spawn(async move {
            let _admitted = admitted;
            let _budget = budget;
            let rows = job.x.rows;
            let mut first = 0;
            // An empty batch still gets one message, so the client learns k.
            loop {
                let n = per_msg.min(rows - first);
                let chunk = Arc::clone(&job);
                let elements = chunk.elements(n).unwrap_or(usize::MAX);
                let msg = service
                    .run(elements, move |exec, cancel| {
                        let k = chunk.x.k as u32;
                        let shape = vec![n as u32, k, k];
                        let first_row = first as u64;
                        let framed = encode
                            .then(|| {
                                let encoding = chunk.x.encoding;
                                Framed::jacobian_chunk(&shape, elements, first_row, encoding)
                            })
                            .flatten();
                        let reply = chunk.answer(first, n, shape, framed, exec, cancel)?;
                        Ok(reply.map(|t| JacobianResponse {
                            jacobian: Some(t),
                            first_row,
                        }))
                    })
                    .await
                    .map_err(Status::from);
                let failed = msg.is_err();
                if tx.send(msg).await.is_err() || failed {
                    break; // the client went away, or the stream ends on an error
                }
                first += n;
                if first >= rows {
                    break;
                }
            }
        });
        Ok(())
    }
}
