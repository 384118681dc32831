//! Optional bearer-token authentication: a tower layer that answers
//! UNAUTHENTICATED unless `authorization: Bearer <token>` carries one of the
//! tokens of `--auth-token-file`. Health checks stay open so probes work.

use clap::Args;
use futures::future::{Either, Ready};
use http::{Request, Response};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

/// Paths that never need a token: Kubernetes and Docker probes carry none.
const OPEN_PREFIXES: [&str; 1] = ["/grpc.health.v1.Health/"];

/// Authentication flags.
#[derive(Clone, Debug, Args)]
pub struct AuthArgs {
    /// File of accepted bearer tokens, one per line (blank lines and lines
    /// starting with '#' are skipped). Unset: no authentication.
    #[arg(long, env = "SOFTMAXD_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("auth token file {0} holds no token")]
    Empty(PathBuf),
}

/// The accepted tokens. Debug output never shows them.
#[derive(Clone)]
pub struct Tokens(Arc<[Box<[u8]>]>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl Tokens {
    /// Reads `path`; an empty file is an error rather than a server nobody can call.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).ok_or_else(|| AuthError::Empty(path.to_owned()))
    }

    /// The tokens of a file's text, or `None` when it holds none.
    pub fn parse(text: &str) -> Option<Self> {
        let tokens: Vec<Box<[u8]>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.as_bytes().into())
            .collect();
        (!tokens.is_empty()).then(|| Self(tokens.into()))
    }

    /// Whether `presented` is one of the tokens. Every token is compared, each
    /// in time independent of where the bytes differ, so timing reveals no
    /// token's content.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0);
        for token in self.0.iter() {
            found |= token.as_ref().ct_eq(presented);
        }
        found.into()
    }

    fn authorizes(&self, headers: &http::HeaderMap) -> bool {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return false;
        };
        let bytes = value.as_bytes();
        match bytes.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => bytes
                .get(7..)
                .is_some_and(|token| self.accepts(token.trim_ascii())),
            _ => false,
        }
    }
}

/// Refuses calls without a valid token when it holds tokens; passes every
/// call through when it holds none.
#[derive(Clone, Debug, Default)]
pub struct AuthLayer {
    tokens: Option<Tokens>,
}

impl AuthLayer {
    /// A layer requiring one of `tokens`, or none when `None`.
    pub fn new(tokens: Option<Tokens>) -> Self {
        Self { tokens }
    }

    /// From the flags: reads the token file if one is given.
    pub fn from_args(args: &AuthArgs) -> Result<Self, AuthError> {
        args.auth_token_file
            .as_deref()
            .map(Tokens::load)
            .transpose()
            .map(Self::new)
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Tokens>,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let open = |path: &str| OPEN_PREFIXES.iter().any(|p| path.starts_with(p));
        match &self.tokens {
            Some(tokens) if !open(req.uri().path()) && !tokens.authorizes(req.headers()) => {
                let refusal = Status::unauthenticated("missing or invalid bearer token");
                Either::Right(futures::future::ready(Ok(refusal.into_http())))
            }
            _ => Either::Left(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn parses_one_token_per_line() {
        let t = Tokens::parse("# comment\n\n  alpha  \nbeta\n").unwrap();
        assert!(t.accepts(b"alpha") && t.accepts(b"beta"));
        assert!(!t.accepts(b"alph") && !t.accepts(b"alphaa") && !t.accepts(b""));
        assert!(Tokens::parse("\n# only a comment\n").is_none());
        assert_eq!(format!("{t:?}"), "Tokens(2 redacted)");
    }

    #[test]
    fn needs_the_bearer_scheme() {
        let t = Tokens::parse("s3cret").unwrap();
        assert!(t.authorizes(&headers("Bearer s3cret")));
        assert!(t.authorizes(&headers("bearer s3cret")));
        assert!(!t.authorizes(&headers("Basic s3cret")));
        assert!(!t.authorizes(&headers("s3cret")));
        assert!(!t.authorizes(&headers("Bearer wrong")));
        assert!(!t.authorizes(&http::HeaderMap::new()));
    }
}
