//! The crate's one error type, and its one mapping to gRPC status codes.

use std::path::PathBuf;

/// Everything that can go wrong in the control plane.
///
/// Messages never contain a secret: validation errors name the field, never echo a secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed.
    #[error("{field}: {problem}")]
    InvalidArgument { field: String, problem: String },
    /// A named resource does not exist.
    #[error("{kind} \"{id}\" not found")]
    NotFound { kind: &'static str, id: String },
    /// A call came without the token its service needs, or with another one.
    #[error("missing or invalid {role} token")]
    Unauthenticated { role: &'static str },
    /// Under mTLS, a ConfigService call came on a connection without a node client certificate.
    #[error(
        "this control plane takes config calls only from nodes presenting a TLS client \
         certificate signed by its node CA: start the node with --tls-client-cert and \
         --tls-client-key"
    )]
    NodeCertificateRequired,
    /// The caller's token is valid but may not do this (another tenant's resource, an
    /// operator-only call). The message names the caller's limits, never another tenant's data.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is well formed but the system's state forbids it (quota, entitlement, state).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request needs something this process cannot provide (yet).
    #[error("{0}")]
    Unavailable(String),
    /// The embedded store failed.
    #[error("store: {0}")]
    Store(#[from] sled::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    /// Reading or writing a file of the data directory failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The master key is malformed or does not open the store.
    #[error("master key: {0}")]
    MasterKey(String),
    /// A sealed value did not open under the master key.
    #[error("a sealed value could not be opened (wrong master key or corrupt data)")]
    Unseal,
    /// A sealed value names a master key this process was not given.
    #[error(
        "a sealed value is under master key id {key_id}, which this process was not given \
         (pass that key as --master-key, or as --previous-master-key while a rotation re-seals)"
    )]
    UnknownMasterKey { key_id: String },
    /// A secret flag or its file twin (`--admin-token-file`) could not be used.
    #[error("{0}")]
    SecretFile(#[from] hookplane_secret_file::SecretFileError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The web console's HTTP server failed.
    #[error("console: {0}")]
    Console(#[source] std::io::Error),
    /// The console could not set up its TLS dial to the control plane's own port.
    #[error("the console cannot dial the control plane: {0}")]
    ConsoleDial(String),
    /// The reflection service could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The HTTP client for test events could not be built.
    #[error("outbound: {0}")]
    Outbound(#[from] hookplane_outbound::Error),
    /// The mail settings are unusable, or an email could not be built or sent. The message never
    /// holds the SMTP password.
    #[error("smtp: {detail}")]
    Mail {
        detail: String,
        /// The server refused for good (5xx) or the message cannot be built: retrying is useless.
        permanent: bool,
    },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: impl Into<String>) -> Error {
        Error::NotFound {
            kind,
            id: id.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> tonic::Status {
        let message = err.to_string();
        match err {
            Error::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            Error::Unauthenticated { .. } | Error::NodeCertificateRequired => {
                tonic::Status::unauthenticated(message)
            }
            Error::NotFound { .. } => tonic::Status::not_found(message),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(message),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            Error::Unavailable(_) => tonic::Status::unavailable(message),
            Error::Store(_)
            | Error::Corrupt { .. }
            | Error::Io { .. }
            | Error::MasterKey(_)
            | Error::Unseal
            | Error::UnknownMasterKey { .. }
            | Error::SecretFile(_)
            | Error::Transport(_)
            | Error::Reflection(_)
            | Error::Console(_)
            | Error::ConsoleDial(_)
            | Error::Outbound(_)
            | Error::Mail { .. } => {
                tracing::error!(error = %message, "internal error answering a request");
                tonic::Status::internal(message)
            }
        }
    }
}
