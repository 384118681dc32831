//! The service's one error type and its mapping to gRPC status codes
//! (DESIGN.md §6). Handlers return these with `?`; only `From` builds a `Status`.

use crate::kernel::KernelError;
use tonic::{Code, Status};

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or holds values outside the function's domain.
    #[error("{0}")]
    Invalid(String),
    /// The request or its response would exceed a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The server is draining and takes no new work.
    #[error("server is shutting down; retry on another replica")]
    ShuttingDown,
    /// The call's deadline passed or its client went away.
    #[error("{0}")]
    Cancelled(String),
    /// A bug: validated input that the kernel still refused.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An `Invalid` error from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

impl From<KernelError> for Error {
    fn from(e: KernelError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<ndarray::ShapeError> for Error {
    fn from(e: ndarray::ShapeError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Invalid(_) => Code::InvalidArgument,
            Error::TooLarge(_) => Code::ResourceExhausted,
            Error::ShuttingDown => Code::Unavailable,
            Error::Cancelled(_) => Code::Cancelled,
            Error::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
