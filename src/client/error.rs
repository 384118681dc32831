//! `ClientError`: the one error type of every client call, carrying a gRPC code.

use tonic::Code;

/// Why a client call failed. [`ClientError::code`] gives the gRPC status code
/// in every case, so callers can match on it as the Python and Node clients do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server (or the channel) answered with a non-OK status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The channel could not be set up.
    #[error("connecting: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// An argument cannot be put on the wire (e.g. a dimension over 2^32 - 1).
    #[error("invalid argument: {0}")]
    Input(String),
    /// The server's answer does not hold what the call expects.
    #[error("malformed response: {0}")]
    Response(String),
}

impl ClientError {
    /// The gRPC status code: the server's, `Unavailable` for connection
    /// failures (also those tonic reports as `Unknown`), `InvalidArgument` for local argument errors, `Internal` for
    /// malformed responses.
    pub fn code(&self) -> Code {
        match self {
            // tonic reports a connection that broke before any answer (the
            // server crashed or restarted) as UNKNOWN; gRPC calls that
            // UNAVAILABLE, and so does this client, which then retries it.
            ClientError::Status(s) if s.code() == Code::Unknown && is_transport(s) => {
                Code::Unavailable
            }
            ClientError::Status(s) => s.code(),
            ClientError::Connect(_) => Code::Unavailable,
            ClientError::Input(_) => Code::InvalidArgument,
            ClientError::Response(_) => Code::Internal,
        }
    }

    /// The status message (the server's names the field and flat position).
    pub fn message(&self) -> String {
        match self {
            ClientError::Status(s) => s.message().to_string(),
            other => other.to_string(),
        }
    }
}

/// Whether `status` is tonic's stand-in for a failed connection.
fn is_transport(status: &tonic::Status) -> bool {
    std::error::Error::source(status)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}
