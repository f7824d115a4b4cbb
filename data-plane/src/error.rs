//! The crate's one error type, and its one mapping to gRPC status codes (EventService).

use std::io;

/// Everything that can go wrong in a data-plane node.
///
/// Messages never carry a secret or a token: a refused publisher is told its token is wrong,
/// never what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spool (sled) failed to read or write.
    #[error("spool: {0}")]
    Spool(#[from] sled::Error),
    /// The shared queue (NATS JetStream) did not answer or refused a request.
    #[error("queue: {0}")]
    Queue(String),
    /// A spooled record could not be decoded (a corrupt or foreign spool).
    #[error("spool record is corrupt: {0}")]
    CorruptRecord(#[from] prost::DecodeError),
    /// A socket, file or listener failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The control plane URL or the node's startup settings are unusable.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// The delivery HTTP client could not be built, or the SSRF guard turned a target down.
    #[error("{0}")]
    Outbound(#[from] hookplane_outbound::Error),
    /// The gRPC server stopped with an error.
    #[error("grpc server: {0}")]
    GrpcServer(#[from] tonic::transport::Error),
    /// A request field is missing or malformed.
    #[error("{field}: {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: String,
    },
    /// A request names something the node's configuration does not hold.
    #[error("{kind} \"{id}\" not found")]
    NotFound { kind: &'static str, id: String },
    /// A call came without the token its service needs, or with another one.
    #[error("missing or invalid {role} token")]
    Unauthenticated { role: &'static str },
    /// The token is valid but may not do this (publish for another tenant).
    #[error("{0}")]
    PermissionDenied(String),
    /// The node has not received its first configuration snapshot yet.
    #[error("this node has no configuration yet; try again shortly")]
    NotReady,
    /// The spool is at its cap, or the tenant holds its share of it: nothing was stored.
    #[error("{0}")]
    SpoolFull(crate::queue::budget::Refusal),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field,
            problem: problem.into(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> tonic::Status {
        let message = err.to_string();
        match err {
            Error::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            Error::NotFound { .. } => tonic::Status::not_found(message),
            Error::Unauthenticated { .. } => tonic::Status::unauthenticated(message),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(message),
            // Not this node's failure: the caller's tenant has used its room until its
            // deliveries drain.
            Error::SpoolFull(_) => tonic::Status::resource_exhausted(message),
            // The caller may try again: another node, or this one once it has config or disk.
            Error::NotReady | Error::Spool(_) | Error::Io(_) | Error::Queue(_) => {
                tonic::Status::unavailable(message)
            }
            Error::CorruptRecord(_)
            | Error::InvalidSetting(_)
            | Error::Outbound(_)
            | Error::GrpcServer(_) => {
                tracing::error!(error = %message, "internal error answering a request");
                tonic::Status::internal(message)
            }
        }
    }
}
