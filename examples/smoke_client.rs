//! A client that checks a running softmaxd from outside: used by
//! tests/docker/run.sh against the container image, usable against any server.
//!
//!   cargo run --example smoke_client -- check --addr 127.0.0.1:50051
//!   cargo run --example smoke_client -- replay --addr A --call softmax.v1.SoftmaxService.Forward --file F
//!   cargo run --example smoke_client -- drain --addr A
//!   cargo run --example smoke_client -- refused --addr A --ca ca.pem
//!   cargo run --example smoke_client -- pki --dir DIR
//!
//! Every mode takes --ca PEM (TLS) and --token T (bearer token).

use bytes::{Buf, Bytes};
use clap::{Parser, Subcommand};
use prost::Message;
use softmaxd::proto::v1::softmax_service_client::SoftmaxServiceClient;
use softmaxd::proto::v1::{
    BackwardRequest, CrossEntropyRequest, ForwardRequest, JacobianRequest, Tensor,
};
use std::process::ExitCode;
use tokio_stream::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Mode,
}

/// How to reach the server.
#[derive(clap::Args, Clone)]
struct Conn {
    #[arg(long, global = true, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Speak TLS, trusting this PEM CA.
    #[arg(long, global = true)]
    ca: Option<std::path::PathBuf>,
    /// Name the server certificate must carry.
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// Bearer token sent with every call.
    #[arg(long, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Mode {
    /// Calls every kind of RPC plus health and reflection and checks the answers.
    Check,
    /// Sends the length-delimited messages of a ghz binary data file.
    Replay {
        /// Full method name as ghz takes it, e.g. softmax.v1.SoftmaxService.Forward.
        #[arg(long)]
        call: String,
        #[arg(long)]
        file: std::path::PathBuf,
        /// Messages per stream for streaming calls (cycling through the file).
        #[arg(long, default_value_t = 0)]
        stream_count: usize,
    },
    /// Holds a ForwardStream open: one exchange, prints READY, waits for a line
    /// on stdin (sent once the server is draining), then finishes the stream.
    Drain,
    /// Checks that a TLS server with tokens refuses a call without a token
    /// and a plaintext client.
    Refused,
    /// Writes a throwaway CA (ca.pem) and a server certificate for localhost
    /// and 127.0.0.1 (server.pem, server.key) into a directory.
    Pki {
        #[arg(long)]
        dir: std::path::PathBuf,
    },
}

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let conn = &cli.conn;
    let result = match cli.command {
        Mode::Check => check(conn).await,
        Mode::Replay {
            call,
            file,
            stream_count,
        } => replay(conn, &call, &file, stream_count).await,
        Mode::Drain => drain(conn).await,
        Mode::Refused => refused(conn).await,
        Mode::Pki { dir } => pki(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smoke_client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call when there is a token.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

type Transport = InterceptedService<Channel, Bearer>;

async fn channel(conn: &Conn, tls: bool) -> Result<Channel, Failure> {
    let scheme = if tls { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{}", conn.addr))?;
    if let (true, Some(ca)) = (tls, &conn.ca) {
        endpoint = endpoint.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
                .domain_name(conn.server_name.clone()),
        )?;
    }
    Ok(endpoint.connect().await?)
}

async fn connect(conn: &Conn) -> Result<Transport, Failure> {
    let bearer = match &conn.token {
        Some(t) => Some(format!("Bearer {t}").parse()?),
        None => None,
    };
    let channel = channel(conn, conn.ca.is_some()).await?;
    Ok(InterceptedService::new(channel, Bearer(bearer)))
}

fn f32_tensor(shape: &[u32], values: &[f32]) -> Tensor {
    Tensor {
        shape: shape.to_vec(),
        f32: values.to_vec(),
        ..Default::default()
    }
}

/// Softmax of one row in f64: the reference the server's answers are held to.
fn softmax_ref(row: &[f64]) -> Vec<f64> {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn expect_close(what: &str, got: &[f32], want: &[f64]) -> Result<(), Failure> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()).into());
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if (f64::from(*g) - w).abs() > 1e-6 {
            return Err(format!("{what}[{i}] = {g}, expected {w}").into());
        }
    }
    println!("ok: {what}");
    Ok(())
}

async fn check(conn: &Conn) -> Result<(), Failure> {
    let channel = connect(conn).await?;
    let mut api = SoftmaxServiceClient::new(channel.clone());

    let logits = [1.0f32, 2.0, 3.0, 0.5, f32::NEG_INFINITY, 0.5];
    let rows: Vec<Vec<f64>> = logits
        .chunks(3)
        .map(|r| softmax_ref(&r.iter().map(|v| f64::from(*v)).collect::<Vec<_>>()))
        .collect();
    let s_ref: Vec<f64> = rows.concat();

    let out = api
        .forward(ForwardRequest {
            logits: Some(f32_tensor(&[2, 3], &logits)),
            ..Default::default()
        })
        .await?
        .into_inner()
        .output
        .ok_or("Forward: no output")?;
    if out.shape != [2, 3] {
        return Err(format!("Forward: shape {:?}", out.shape).into());
    }
    expect_close("Forward softmax with a -inf mask", &out.f32, &s_ref)?;

    // Backward from s: (s_j (g_j - <g, s>)) per row.
    let grad = [0.3f32, -1.0, 2.0, 1.0, 1.0, 1.0];
    let mut want = Vec::new();
    for (s, g) in s_ref.chunks(3).zip(grad.chunks(3)) {
        let dot: f64 = s.iter().zip(g).map(|(s, g)| s * f64::from(*g)).sum();
        want.extend(s.iter().zip(g).map(|(s, g)| s * (f64::from(*g) - dot)));
    }
    let s_f32: Vec<f32> = s_ref.iter().map(|v| *v as f32).collect();
    let back = api
        .backward(BackwardRequest {
            output: Some(f32_tensor(&[2, 3], &s_f32)),
            grad_output: Some(f32_tensor(&[2, 3], &grad)),
            ..Default::default()
        })
        .await?
        .into_inner()
        .grad_logits
        .ok_or("Backward: no grad_logits")?;
    expect_close("Backward (uniform g gives 0)", &back.f32, &want)?;

    // Jacobian diag(s) - s s^T of the first row.
    let s = &s_ref[..3];
    let want: Vec<f64> = (0..9)
        .map(|ij| {
            let (i, j) = (ij / 3, ij % 3);
            if i == j {
                s[i] - s[i] * s[j]
            } else {
                -s[i] * s[j]
            }
        })
        .collect();
    let jac = api
        .jacobian(JacobianRequest {
            logits: Some(f32_tensor(&[1, 3], &logits[..3])),
            ..Default::default()
        })
        .await?
        .into_inner()
        .jacobian
        .ok_or("Jacobian: no jacobian")?;
    expect_close("Jacobian", &jac.f32, &want)?;

    let ce = api
        .cross_entropy(CrossEntropyRequest {
            logits: Some(f32_tensor(&[1, 3], &logits[..3])),
            labels: vec![2],
            ..Default::default()
        })
        .await?
        .into_inner()
        .loss
        .ok_or("CrossEntropy: no loss")?;
    expect_close("CrossEntropy loss", &ce.f32, &[-s[2].ln()])?;

    let bad = api
        .forward(ForwardRequest {
            logits: Some(f32_tensor(&[1, 2], &[0.0, f32::NAN])),
            ..Default::default()
        })
        .await;
    match bad {
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            println!(
                "ok: NaN logits give INVALID_ARGUMENT ({})",
                status.message()
            )
        }
        other => {
            return Err(format!("NaN logits: expected INVALID_ARGUMENT, got {other:?}").into())
        }
    }

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "softmax.v1.SoftmaxService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner()
            .status;
        if status != ServingStatus::Serving as i32 {
            return Err(format!("health {service:?}: status {status}").into());
        }
    }
    println!("ok: health SERVING");

    // ghz resolves methods through reflection by their full symbol.
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "softmax.v1.SoftmaxService.Forward".into(),
        )),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    match replies
        .next()
        .await
        .transpose()?
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::FileDescriptorResponse(files))
            if !files.file_descriptor_proto.is_empty() =>
        {
            println!("ok: reflection resolves softmax.v1.SoftmaxService.Forward")
        }
        other => return Err(format!("reflection: {other:?}").into()),
    }
    Ok(())
}

/// Splits a ghz binary data file into its length-delimited messages.
fn delimited<M: Message + Default>(mut data: Bytes) -> Result<Vec<M>, Failure> {
    let mut out = Vec::new();
    while data.has_remaining() {
        out.push(M::decode_length_delimited(&mut data)?);
    }
    if out.is_empty() {
        return Err("no messages in the data file".into());
    }
    Ok(out)
}

fn shape_of(t: &Option<Tensor>) -> Vec<u32> {
    t.as_ref().map(|t| t.shape.clone()).unwrap_or_default()
}

async fn replay(
    conn: &Conn,
    call: &str,
    file: &std::path::Path,
    stream_count: usize,
) -> Result<(), Failure> {
    let data = Bytes::from(std::fs::read(file)?);
    let mut api = SoftmaxServiceClient::new(connect(conn).await?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let method = call.rsplit(['.', '/']).next().unwrap_or_default();
    let sent = match method {
        "Forward" => {
            let req = delimited::<ForwardRequest>(data)?.swap_remove(0);
            let want = shape_of(&req.logits);
            let got = shape_of(&api.forward(req).await?.into_inner().output);
            if got != want {
                return Err(format!("Forward: shape {got:?}, expected {want:?}").into());
            }
            1
        }
        "Backward" => {
            let req = delimited::<BackwardRequest>(data)?.swap_remove(0);
            let want = shape_of(&req.grad_output);
            let got = shape_of(&api.backward(req).await?.into_inner().grad_logits);
            if got != want {
                return Err(format!("Backward: shape {got:?}, expected {want:?}").into());
            }
            1
        }
        "Jacobian" => {
            let req = delimited::<JacobianRequest>(data)?.swap_remove(0);
            let mut want = shape_of(&req.logits);
            want.push(want.last().copied().unwrap_or_default());
            let got = shape_of(&api.jacobian(req).await?.into_inner().jacobian);
            if got != want {
                return Err(format!("Jacobian: shape {got:?}, expected {want:?}").into());
            }
            1
        }
        "ForwardStream" => {
            let messages = delimited::<ForwardRequest>(data)?;
            let n = if stream_count == 0 {
                messages.len()
            } else {
                stream_count
            };
            let requests: Vec<ForwardRequest> = messages.iter().cycle().take(n).cloned().collect();
            let mut replies = api
                .forward_stream(tokio_stream::iter(requests.clone()))
                .await?
                .into_inner();
            let mut answered = 0;
            while let Some(reply) = replies.message().await? {
                let want = requests.get(answered).map(|r| shape_of(&r.logits));
                if Some(shape_of(&reply.output)) != want {
                    return Err(
                        format!("ForwardStream: reply {answered} has the wrong shape").into(),
                    );
                }
                answered += 1;
            }
            if answered != n {
                return Err(format!("ForwardStream: {answered} replies to {n} requests").into());
            }
            n
        }
        other => return Err(format!("no replay for method {other:?}").into()),
    };
    println!("ok: {call} with {} ({sent} messages)", file.display());
    Ok(())
}

async fn drain(conn: &Conn) -> Result<(), Failure> {
    let mut api = SoftmaxServiceClient::new(connect(conn).await?);
    let (tx, rx) = tokio::sync::mpsc::channel::<ForwardRequest>(4);
    let request = |i: usize| ForwardRequest {
        logits: Some(f32_tensor(
            &[2, 4],
            &[i as f32, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0],
        )),
        ..Default::default()
    };
    tx.send(request(0)).await?;
    let mut replies = api
        .forward_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    replies
        .message()
        .await?
        .ok_or("stream ended before its first reply")?;
    println!("READY");

    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await??;

    // The server is draining now: this call was admitted before, so it must
    // be served to the end.
    for i in 1..4 {
        tx.send(request(i)).await?;
        let reply = replies
            .message()
            .await?
            .ok_or("stream ended early while draining")?;
        let probs = reply.output.map(|t| t.f32).unwrap_or_default();
        let want = softmax_ref(&[i as f64, 1.0, 2.0, 3.0]);
        expect_close(
            &format!("in-flight ForwardStream message {i}"),
            &probs[..4.min(probs.len())],
            &want,
        )?;
    }
    drop(tx);
    if replies.message().await?.is_some() {
        return Err("an extra reply after the last request".into());
    }
    println!("ok: in-flight stream completed after SIGTERM");
    Ok(())
}

async fn refused(conn: &Conn) -> Result<(), Failure> {
    let anonymous = Conn {
        token: None,
        ..conn.clone()
    };
    let mut api = SoftmaxServiceClient::new(connect(&anonymous).await?);
    let request = ForwardRequest {
        logits: Some(f32_tensor(&[1, 2], &[0.0, 0.0])),
        ..Default::default()
    };
    match api.forward(request.clone()).await {
        Err(s) if s.code() == tonic::Code::Unauthenticated => {
            println!("ok: a call without a token is UNAUTHENTICATED")
        }
        other => return Err(format!("a call without a token: {other:?}").into()),
    }
    let plaintext = match channel(conn, false).await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => SoftmaxServiceClient::new(ch)
            .forward(request)
            .await
            .map(|_| ())
            .map_err(|s| s.to_string()),
    };
    match plaintext {
        Err(e) => println!("ok: a plaintext client is refused ({e})"),
        Ok(()) => return Err("a plaintext client was served".into()),
    }
    Ok(())
}

fn pki(dir: &std::path::Path) -> Result<(), Failure> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "softmaxd smoke-test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut server =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &ca)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("server.pem"), cert.pem())?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;
    println!(
        "ok: wrote ca.pem, server.pem and server.key to {}",
        dir.display()
    );
    Ok(())
}
