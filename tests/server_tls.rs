//! TLS and mutual TLS with certificates made for the test (rcgen): a TLS call
//! succeeds, a plaintext client and a client without (or with a foreign)
//! certificate are refused, and a bearer token works over TLS.

mod harness;

use harness::wire::{tensor, Kind};
use harness::TestServer;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use softmaxd::proto::v1::softmax_service_client::SoftmaxServiceClient;
use softmaxd::proto::v1::ForwardRequest;
use softmaxd::server::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A throwaway CA with a server certificate for localhost/127.0.0.1 and a
/// client certificate, written as PEM files into a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// A leaf certificate signed by `issuer`: PEM certificate and PEM key.
fn leaf(
    issuer: &CertifiedIssuer<'_, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca("softmaxd test CA");
        let (server_cert, server_key) = leaf(
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert_pem, client_key_pem) =
            leaf(&ca, &["test-client"], ExtendedKeyUsagePurpose::ClientAuth);
        for (name, pem) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server_cert),
            ("server.key", server_key),
        ] {
            std::fs::write(dir.path().join(name), pem).expect("write PEM");
        }
        Self {
            dir,
            ca_pem: ca.pem(),
            client_cert_pem,
            client_key_pem,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Server settings for TLS, and for mutual TLS when `mutual`.
    fn config(&self, mutual: bool) -> Config {
        let mut config = Config::for_tests();
        config.tls.tls_cert = Some(self.path("server.pem"));
        config.tls.tls_key = Some(self.path("server.key"));
        if mutual {
            config.tls.tls_client_ca = Some(self.path("ca.pem"));
        }
        config
    }

    /// Client settings trusting the test CA, optionally with a client identity.
    fn client_tls(&self, identity: Option<Identity>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        match identity {
            Some(id) => tls.identity(id),
            None => tls,
        }
    }

    fn client_identity(&self) -> Identity {
        Identity::from_pem(&self.client_cert_pem, &self.client_key_pem)
    }
}

fn forward_request() -> ForwardRequest {
    ForwardRequest {
        logits: Some(tensor(&[1, 3], &[1.0, 2.0, 3.0], Kind::F32Typed)),
        temperature: None,
        log: false,
    }
}

/// Connects and makes one Forward call; any failure (handshake or call) is an Err.
async fn forward_over(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<Vec<f32>, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Channel::from_shared(format!("{scheme}://{addr}")).map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let reply = SoftmaxServiceClient::new(channel)
        .forward(forward_request())
        .await
        .map_err(|s| format!("call: {s}"))?;
    Ok(reply.into_inner().output.map(|t| t.f32).unwrap_or_default())
}

#[tokio::test]
async fn tls_call_succeeds_and_plaintext_is_refused() {
    let pki = Pki::new();
    let server = TestServer::start_with(pki.config(false)).await;

    let probs = forward_over(server.addr, Some(pki.client_tls(None)))
        .await
        .expect("TLS call");
    let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|x| (x - 3.0).exp()).collect();
    let sum: f64 = e.iter().sum();
    for (got, want) in probs.iter().zip(e.iter().map(|v| v / sum)) {
        assert!((f64::from(*got) - want).abs() < 2e-6, "{got} vs {want}");
    }

    let plaintext = forward_over(server.addr, None).await;
    assert!(
        plaintext.is_err(),
        "plaintext client was served: {plaintext:?}"
    );

    // A client that does not trust the server's CA refuses the server.
    let stranger = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca("another CA").pem()))
        .domain_name("localhost");
    assert!(forward_over(server.addr, Some(stranger)).await.is_err());

    // The server still serves TLS after the refused handshakes.
    forward_over(server.addr, Some(pki.client_tls(None)))
        .await
        .expect("TLS call after refusals");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let server = TestServer::start_with(pki.config(true)).await;

    forward_over(
        server.addr,
        Some(pki.client_tls(Some(pki.client_identity()))),
    )
    .await
    .expect("mTLS call with a client certificate");

    let anonymous = forward_over(server.addr, Some(pki.client_tls(None))).await;
    assert!(
        anonymous.is_err(),
        "client without a certificate was served: {anonymous:?}"
    );

    let foreign_ca = ca("untrusted CA");
    let (cert, key) = leaf(
        &foreign_ca,
        &["intruder"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let foreign = forward_over(
        server.addr,
        Some(pki.client_tls(Some(Identity::from_pem(cert, key)))),
    )
    .await;
    assert!(
        foreign.is_err(),
        "client with a foreign certificate was served: {foreign:?}"
    );

    assert!(
        forward_over(server.addr, None).await.is_err(),
        "plaintext client was served"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bearer_token_over_tls() {
    let pki = Pki::new();
    let token_file = pki.path("tokens");
    std::fs::write(&token_file, "tls-token\n").expect("write tokens");
    let mut config = pki.config(false);
    config.auth.auth_token_file = Some(token_file);
    let server = TestServer::start_with(config).await;

    let channel = Channel::from_shared(format!("https://{}", server.addr))
        .expect("uri")
        .tls_config(pki.client_tls(None))
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    let mut client = SoftmaxServiceClient::new(channel);

    let refused = client
        .forward(forward_request())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let mut request = tonic::Request::new(forward_request());
    request
        .metadata_mut()
        .insert("authorization", "Bearer tls-token".parse().expect("header"));
    client
        .forward(request)
        .await
        .expect("TLS call with the token");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn health_check_probe_speaks_mutual_tls() {
    use softmaxd::server::config::HealthCheckArgs;
    use softmaxd::server::health_check::probe;
    use softmaxd::server::tls::ProbeTlsArgs;

    let pki = Pki::new();
    std::fs::write(pki.path("client.pem"), &pki.client_cert_pem).expect("write");
    std::fs::write(pki.path("client.key"), &pki.client_key_pem).expect("write");
    let server = TestServer::start_with(pki.config(true)).await;
    let args = |tls: ProbeTlsArgs| HealthCheckArgs {
        addr: server.addr.to_string(),
        service: "softmax.v1.SoftmaxService".into(),
        timeout: 5.0,
        tls,
    };
    let mutual = ProbeTlsArgs {
        tls_ca: Some(pki.path("ca.pem")),
        tls_cert: Some(pki.path("client.pem")),
        tls_key: Some(pki.path("client.key")),
        tls_server_name: None,
    };
    // The server certificate names 127.0.0.1 as well as localhost.
    probe(&args(mutual.clone()))
        .await
        .expect("SERVING over mutual TLS");
    let by_name = ProbeTlsArgs {
        tls_server_name: Some("localhost".into()),
        ..mutual.clone()
    };
    probe(&args(by_name))
        .await
        .expect("SERVING with an explicit server name");

    let without_cert = ProbeTlsArgs {
        tls_cert: None,
        tls_key: None,
        ..mutual
    };
    assert!(probe(&args(without_cert)).await.is_err());
    assert!(probe(&args(ProbeTlsArgs::default())).await.is_err());
    server.stop().await.expect("clean stop");
}
