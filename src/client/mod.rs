//! A Rust client for softmaxd: ndarray in and out over the generated tonic client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), softmaxd::client::ClientError> {
//! use softmaxd::client::{Client, Params};
//! let client = Client::connect("127.0.0.1:50051").await?;
//! let x = ndarray::array![[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]];
//! let probs = client.forward(x.view(), Params::default()).await?;
//! # Ok(()) }
//! ```

mod error;
mod retry;
mod tensor;

pub use error::ClientError;
pub use retry::RetryPolicy;
pub use tensor::{Encoding, Float};

use crate::proto::v1::softmax_service_client::SoftmaxServiceClient;
use crate::proto::v1::{BackwardRequest, CrossEntropyRequest, ForwardRequest, JacobianRequest};
use futures::{Stream, StreamExt};
use ndarray::{Array3, ArrayD, ArrayView, Dimension, Ix3, IxDyn};
use std::future::Future;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

/// The server's default message limit, above which `jacobian` streams.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How to reach the server and how to call it.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// TLS settings; `None` is plaintext HTTP/2.
    pub tls: Option<ClientTlsConfig>,
    /// Sent as `authorization: Bearer <token>` with every call.
    pub token: Option<String>,
    /// Deadline of each call.
    pub timeout: Option<Duration>,
    /// Raw little-endian bytes (default) or typed repeated fields.
    pub encoding: Encoding,
    /// The server's message limit; larger Jacobians go through JacobianStream.
    pub max_message_bytes: usize,
    /// Retries of calls refused with UNAVAILABLE (unary calls, and
    /// JacobianStream until its first message; never ForwardStream).
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls: None,
            token: None,
            timeout: None,
            encoding: Encoding::Raw,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            retry: RetryPolicy::default(),
        }
    }
}

/// Temperature and log flag shared by the calls.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Params {
    /// Softmax temperature; `None` means 1.
    pub temperature: Option<f32>,
    /// Log-softmax instead of softmax.
    pub log: bool,
}

impl Params {
    /// These parameters with temperature `t`.
    pub fn with_temperature(self, t: f32) -> Self {
        Params {
            temperature: Some(t),
            ..self
        }
    }

    /// These parameters for log-softmax.
    pub fn with_log(self, log: bool) -> Self {
        Params { log, ..self }
    }
}

/// What Backward and Jacobian start from.
#[derive(Clone)]
pub enum Source<'a, T, D> {
    /// The logits; the server recomputes s.
    Logits(ArrayView<'a, T, D>),
    /// The Forward output s (log-probabilities when `log` is set).
    Output(ArrayView<'a, T, D>),
}

/// What CrossEntropy compares against.
#[derive(Clone)]
pub enum Target<'a, T, D> {
    /// One class index per vector.
    Labels(&'a [u32]),
    /// A distribution per vector, same shape as the logits.
    Distribution(ArrayView<'a, T, D>),
}

/// CrossEntropy's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropy<T> {
    /// Loss per vector, shape = batch dims.
    pub loss: ArrayD<T>,
    /// Gradient with respect to the logits, shape of the logits.
    pub grad_logits: ArrayD<T>,
}

/// One JacobianStream message: vectors `first_row..first_row + n`.
#[derive(Clone, Debug, PartialEq)]
pub struct JacobianChunk<T> {
    /// Flat index of the first vector.
    pub first_row: u64,
    /// `[n, k, k]` Jacobians.
    pub jacobian: Array3<T>,
}

/// A connection to one softmaxd. Cloning is cheap and clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    raw: SoftmaxServiceClient<Channel>,
    options: ClientOptions,
}

impl Client {
    /// Connects to `addr` (`host:port` or a URI) with default options.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, ClientOptions::default()).await
    }

    /// Connects to `addr` (`host:port` or a URI).
    pub async fn connect_with(addr: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("{scheme}://{addr}")
        };
        // Megabyte messages need windows far above HTTP/2's 64 KiB default.
        let mut endpoint = Endpoint::from_shared(uri)?
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(16 << 20)
            .tcp_nodelay(true);
        if let Some(tls) = options.tls.clone() {
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(Self::from_channel(endpoint.connect().await?, options))
    }

    /// A client on an existing channel.
    pub fn from_channel(channel: Channel, options: ClientOptions) -> Self {
        // The server enforces its limit; the client must not cut below it.
        let raw = SoftmaxServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Client { raw, options }
    }

    /// The generated tonic client, for requests the typed methods cannot express.
    pub fn raw(&self) -> SoftmaxServiceClient<Channel> {
        self.raw.clone()
    }

    /// The options this client calls with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// `msg` with this client's deadline and token.
    pub fn request<M>(&self, msg: M) -> Result<Request<M>, ClientError> {
        let mut req = Request::new(msg);
        if let Some(t) = self.options.timeout {
            req.set_timeout(t);
        }
        if let Some(token) = &self.options.token {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| ClientError::Input("token is not a valid header value".into()))?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }

    /// Sends `msg` with `rpc` under the retry policy; a retry sends a clone
    /// (cheap for the default raw encoding, whose bytes are shared).
    async fn call<M, R, F, Fut>(&self, msg: M, rpc: F) -> Result<R, ClientError>
    where
        M: Clone,
        F: Fn(SoftmaxServiceClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        self.options
            .retry
            .run(|| {
                let sent = self
                    .request(msg.clone())
                    .map(|req| rpc(self.raw.clone(), req));
                async move { Ok(sent?.await?.into_inner()) }
            })
            .await
    }

    fn encode<T: Float, D: Dimension>(
        &self,
        a: &ArrayView<'_, T, D>,
        name: &str,
    ) -> Result<crate::proto::v1::Tensor, ClientError> {
        tensor::encode(a, self.options.encoding, name)
    }

    /// softmax(logits / T) over the last axis (log-softmax with `params.log`).
    pub async fn forward<T: Float, D: Dimension>(
        &self,
        logits: ArrayView<'_, T, D>,
        params: Params,
    ) -> Result<ArrayD<T>, ClientError> {
        let msg = ForwardRequest {
            logits: Some(self.encode(&logits, "logits")?),
            temperature: params.temperature,
            log: params.log,
        };
        let res = self
            .call(msg, |mut raw, req| async move { raw.forward(req).await })
            .await?;
        tensor::decode(res.output, logits.shape())
    }

    /// The gradient with respect to the logits, given the upstream gradient.
    pub async fn backward<T: Float, D: Dimension>(
        &self,
        source: Source<'_, T, D>,
        grad_output: ArrayView<'_, T, D>,
        params: Params,
    ) -> Result<ArrayD<T>, ClientError> {
        let mut msg = BackwardRequest {
            grad_output: Some(self.encode(&grad_output, "grad_output")?),
            temperature: params.temperature,
            log: params.log,
            ..BackwardRequest::default()
        };
        match &source {
            Source::Logits(x) => msg.logits = Some(self.encode(x, "logits")?),
            Source::Output(s) => msg.output = Some(self.encode(s, "output")?),
        }
        let res = self
            .call(msg, |mut raw, req| async move { raw.backward(req).await })
            .await?;
        tensor::decode(res.grad_logits, grad_output.shape())
    }

    fn jacobian_request<T: Float, D: Dimension>(
        &self,
        source: &Source<'_, T, D>,
        params: Params,
    ) -> Result<(JacobianRequest, Vec<usize>), ClientError> {
        let mut msg = JacobianRequest {
            temperature: params.temperature,
            log: params.log,
            ..JacobianRequest::default()
        };
        let shape = match source {
            Source::Logits(x) => {
                msg.logits = Some(self.encode(x, "logits")?);
                x.shape().to_vec()
            }
            Source::Output(s) => {
                msg.output = Some(self.encode(s, "output")?);
                s.shape().to_vec()
            }
        };
        Ok((msg, shape))
    }

    /// J[..., i, j] = ∂s_i/∂x_j, shape batch dims + [k, k]. Uses JacobianStream
    /// when the result exceeds half the message limit.
    pub async fn jacobian<T: Float, D: Dimension>(
        &self,
        source: Source<'_, T, D>,
        params: Params,
    ) -> Result<ArrayD<T>, ClientError> {
        self.jacobian_with(source, params, None).await
    }

    /// Like [`Client::jacobian`], with `stream` forcing (`Some(true)`) or
    /// forbidding (`Some(false)`) JacobianStream.
    pub async fn jacobian_with<T: Float, D: Dimension>(
        &self,
        source: Source<'_, T, D>,
        params: Params,
        stream: Option<bool>,
    ) -> Result<ArrayD<T>, ClientError> {
        let (msg, shape) = self.jacobian_request(&source, params)?;
        let (batch, k) = match shape.split_last() {
            Some((&k, batch)) => (batch.to_vec(), k),
            None => (Vec::new(), 0),
        };
        let rows: usize = batch.iter().product();
        let mut out_shape = batch.clone();
        out_shape.extend([k, k]);
        let values = rows.checked_mul(k).and_then(|v| v.checked_mul(k));
        let bytes = values.and_then(|v| v.checked_mul(std::mem::size_of::<T>()));
        let use_stream =
            stream.unwrap_or(bytes.is_none_or(|b| b > self.options.max_message_bytes / 2));
        if !use_stream {
            let res = self
                .call(msg, |mut raw, req| async move { raw.jacobian(req).await })
                .await?;
            return tensor::decode(res.jacobian, &out_shape);
        }
        let total = values.ok_or_else(|| {
            ClientError::Input(format!("Jacobian of shape {shape:?} is too large"))
        })?;
        let mut out = vec![T::zeroed(); total];
        let mut received = 0usize;
        let mut chunks = self.open_jacobian_stream(msg).await?;
        let per_row = k * k;
        while let Some(m) = chunks.message().await? {
            let chunk = into_chunk::<T>(m.first_row, m.jacobian, k)?;
            let n = chunk.jacobian.shape().first().copied().unwrap_or(0);
            let first = usize::try_from(chunk.first_row).unwrap_or(usize::MAX);
            let dst = first
                .checked_add(n)
                .and_then(|end| {
                    out.get_mut(first.saturating_mul(per_row)..end.saturating_mul(per_row))
                })
                .ok_or_else(|| {
                    ClientError::Response(format!(
                        "JacobianStream chunk at row {first} is out of range"
                    ))
                })?;
            let src = chunk
                .jacobian
                .as_slice()
                .ok_or_else(|| ClientError::Response("non-contiguous chunk".into()))?;
            dst.copy_from_slice(src);
            received += n;
        }
        if received != rows {
            return Err(ClientError::Response(format!(
                "JacobianStream sent {received} of {rows} vectors"
            )));
        }
        ArrayD::from_shape_vec(IxDyn(&out_shape), out)
            .map_err(|e| ClientError::Response(e.to_string()))
    }

    /// Starts a JacobianStream: retried until the server answers, never after.
    async fn open_jacobian_stream(
        &self,
        msg: JacobianRequest,
    ) -> Result<tonic::Streaming<crate::proto::v1::JacobianResponse>, ClientError> {
        self.call(
            msg,
            |mut raw, req| async move { raw.jacobian_stream(req).await },
        )
        .await
    }

    /// JacobianStream as it arrives.
    pub async fn jacobian_stream<T: Float, D: Dimension>(
        &self,
        source: Source<'_, T, D>,
        params: Params,
    ) -> Result<impl Stream<Item = Result<JacobianChunk<T>, ClientError>>, ClientError> {
        let (msg, shape) = self.jacobian_request(&source, params)?;
        let k = shape.last().copied().unwrap_or(0);
        let chunks = self.open_jacobian_stream(msg).await?;
        Ok(chunks.map(move |m| {
            let m = m?;
            into_chunk(m.first_row, m.jacobian, k)
        }))
    }

    /// Loss per vector and its gradient, against labels or a target distribution.
    pub async fn cross_entropy<T: Float, D: Dimension>(
        &self,
        logits: ArrayView<'_, T, D>,
        target: Target<'_, T, D>,
        temperature: Option<f32>,
    ) -> Result<CrossEntropy<T>, ClientError> {
        let mut msg = CrossEntropyRequest {
            logits: Some(self.encode(&logits, "logits")?),
            temperature,
            ..CrossEntropyRequest::default()
        };
        match &target {
            Target::Labels(labels) => msg.labels = labels.to_vec(),
            Target::Distribution(y) => msg.target = Some(self.encode(y, "target")?),
        }
        let res = self
            .call(
                msg,
                |mut raw, req| async move { raw.cross_entropy(req).await },
            )
            .await?;
        let batch = logits
            .shape()
            .split_last()
            .map(|(_, b)| b.to_vec())
            .unwrap_or_default();
        Ok(CrossEntropy {
            loss: tensor::decode(res.loss, &batch)?,
            grad_logits: tensor::decode(res.grad_logits, logits.shape())?,
        })
    }

    /// Forward over one bidirectional stream: one output per input, in order.
    /// An input that cannot be encoded (a dimension over 2^32 - 1) is sent
    /// without logits, so the server ends the stream with INVALID_ARGUMENT.
    pub async fn forward_stream<T, S>(
        &self,
        inputs: S,
        params: Params,
    ) -> Result<impl Stream<Item = Result<ArrayD<T>, ClientError>>, ClientError>
    where
        T: Float,
        S: Stream<Item = ArrayD<T>> + Send + 'static,
    {
        let encoding = self.options.encoding;
        let requests = inputs.map(move |a| ForwardRequest {
            logits: tensor::encode(&a.view(), encoding, "logits").ok(),
            temperature: params.temperature,
            log: params.log,
        });
        let responses = self
            .raw
            .clone()
            .forward_stream(self.request(requests)?)
            .await?
            .into_inner();
        Ok(responses.map(|r| tensor::decode(r?.output, &[0])))
    }
}

fn into_chunk<T: Float>(
    first_row: u64,
    jacobian: Option<crate::proto::v1::Tensor>,
    k: usize,
) -> Result<JacobianChunk<T>, ClientError> {
    let jacobian = tensor::decode::<T>(jacobian, &[0, k, k])?
        .into_dimensionality::<Ix3>()
        .map_err(|e| ClientError::Response(format!("JacobianStream message: {e}")))?;
    Ok(JacobianChunk {
        first_row,
        jacobian,
    })
}
