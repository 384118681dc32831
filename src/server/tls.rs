//! TLS with rustls (tonic's `tls-ring`): server certificate and key, and an
//! optional client CA that turns on mutual TLS.

use clap::Args;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// TLS flags of the server.
#[derive(Clone, Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate chain; with --tls-key, the server speaks TLS only.
    #[arg(long, env = "SOFTMAXD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SOFTMAXD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate one of them
    /// signed (mutual TLS).
    #[arg(long, env = "SOFTMAXD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// A certificate or key file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct TlsError {
    path: PathBuf,
    source: std::io::Error,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError {
        path: path.to_owned(),
        source,
    })
}

impl TlsArgs {
    /// The server's TLS settings, or `None` for plaintext.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(tls))
    }
}

/// TLS flags of `softmaxd health-check`, for probing a TLS server. Their
/// environment names differ from the server's so that a probe run inside the
/// server's container does not pick up the server's own certificate.
#[derive(Clone, Debug, Default, Args)]
pub struct ProbeTlsArgs {
    /// Speak TLS, trusting server certificates issued by these PEM CA certificates.
    #[arg(long, env = "SOFTMAXD_HEALTH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present, for servers that require mutual TLS.
    #[arg(long, env = "SOFTMAXD_HEALTH_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "SOFTMAXD_HEALTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name the server certificate must carry; default: the host of --addr.
    #[arg(long, env = "SOFTMAXD_HEALTH_TLS_SERVER_NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl ProbeTlsArgs {
    /// The probe's TLS settings, or `None` for plaintext.
    pub fn client_config(&self) -> Result<Option<ClientTlsConfig>, TlsError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }
}
