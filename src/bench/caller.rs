//! Connecting to a server and making one call of the chosen RPC, with the
//! same HTTP/2 settings the server uses.

use super::args::{BenchArgs, Rpc};
use super::codec::{Passthrough, Prefixed, Reply};
use super::unary;
use crate::server::coalesce::Coalesced;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};

/// Largest answer the tool accepts (the server's own limit is lower).
const MAX_REPLY_BYTES: usize = 2 << 30;

/// Opens one HTTP/2 connection to `addr` with the windows and frame size
/// from `args`.
pub async fn connect(addr: &str, args: &BenchArgs) -> Result<Channel, String> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("{uri}: {e}"))?
        .initial_stream_window_size(args.http2_stream_window)
        .initial_connection_window_size(args.http2_connection_window)
        .max_frame_size(args.http2_max_frame)
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_with_connector(tower::service_fn({
            let coalesce = args.coalesce_writes;
            move |uri| dial(uri, coalesce)
        }))
        .await
        .map_err(|e| format!("cannot connect to {uri}: {e}"))
}

/// TCP with Nagle off, its small writes gathered as the server gathers its
/// own if `coalesce`.
async fn dial(uri: Uri, coalesce: bool) -> std::io::Result<TokioIo<Coalesced<TcpStream>>> {
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let tcp = TcpStream::connect((host, uri.port_u16().unwrap_or(default_port))).await?;
    tcp.set_nodelay(true)?;
    Ok(TokioIo::new(Coalesced::new(tcp, coalesce)))
}

fn path(rpc: Rpc) -> PathAndQuery {
    PathAndQuery::from_static(match rpc {
        Rpc::Forward => "/softmax.v1.SoftmaxService/Forward",
        Rpc::Backward => "/softmax.v1.SoftmaxService/Backward",
        Rpc::Jacobian => "/softmax.v1.SoftmaxService/Jacobian",
        Rpc::JacobianStream => "/softmax.v1.SoftmaxService/JacobianStream",
        Rpc::ForwardStream => "/softmax.v1.SoftmaxService/ForwardStream",
        Rpc::CrossEntropy => "/softmax.v1.SoftmaxService/CrossEntropy",
    })
}

/// An open bidirectional stream: where requests go and answers come from.
type Open = (mpsc::Sender<Bytes>, Streaming<Reply>);

/// Makes calls of one RPC on one channel.
pub struct Caller {
    channel: Channel,
    /// Streaming RPCs go through tonic's client and codec.
    grpc: Grpc<Channel>,
    rpc: Rpc,
    path: PathAndQuery,
    codec: Passthrough,
    /// ForwardStream only: the stream calls are made on, reopened after an error.
    stream: Option<Open>,
}

impl Caller {
    /// A caller of `rpc`; `keep` keeps the answers' bytes for checking.
    pub fn new(channel: Channel, rpc: Rpc, keep: bool) -> Self {
        Self {
            grpc: Grpc::new(channel.clone()).max_decoding_message_size(MAX_REPLY_BYTES),
            channel,
            rpc,
            path: path(rpc),
            codec: Passthrough { keep },
            stream: None,
        }
    }

    /// Forgets an open ForwardStream, after a call on it was abandoned.
    pub fn reset(&mut self) {
        self.stream = None;
    }

    /// One call with the encoded request `body`: a unary round trip, a whole
    /// server stream (lengths summed, the last message kept), or one message
    /// round trip on a ForwardStream.
    pub async fn call(&mut self, body: &Prefixed) -> Result<Reply, Status> {
        let streaming = matches!(self.rpc, Rpc::JacobianStream | Rpc::ForwardStream);
        if !streaming {
            return unary::call(&self.channel, self.path.clone(), body, self.codec.keep).await;
        }
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        if self.rpc == Rpc::JacobianStream {
            return self.server_stream(body.message()).await;
        }
        let r = self.bidi_round_trip(body.message()).await;
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    async fn server_stream(&mut self, body: Bytes) -> Result<Reply, Status> {
        let req = Request::new(body);
        let mut stream = self
            .grpc
            .server_streaming(req, self.path.clone(), self.codec)
            .await?
            .into_inner();
        let mut total = Reply { len: 0, body: None };
        while let Some(reply) = stream.message().await? {
            total.len += reply.len;
            total.body = reply.body.or(total.body);
        }
        Ok(total)
    }

    async fn bidi_round_trip(&mut self, body: Bytes) -> Result<Reply, Status> {
        let (tx, answers) = match &mut self.stream {
            Some(open) => open,
            None => {
                let (tx, rx) = mpsc::channel::<Bytes>(1);
                let req = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
                let answers = self
                    .grpc
                    .streaming(req, self.path.clone(), self.codec)
                    .await?
                    .into_inner();
                self.stream.insert((tx, answers))
            }
        };
        tx.send(body)
            .await
            .map_err(|_| Status::unavailable("the request stream closed"))?;
        answers
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("the server ended the stream"))
    }
}
