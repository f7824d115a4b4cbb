//! The crate's one error type.

use std::io;

/// Everything that can go wrong in a data-plane node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spool (sled) failed to read or write.
    #[error("spool: {0}")]
    Spool(#[from] sled::Error),
    /// A spooled record could not be decoded (a corrupt or foreign spool).
    #[error("spool record is corrupt: {0}")]
    CorruptRecord(#[from] prost::DecodeError),
    /// A socket, file or listener failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The control plane URL or the node's startup settings are unusable.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// The HTTP client for deliveries could not be built.
    #[error("http client: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// The gRPC server stopped with an error.
    #[error("grpc server: {0}")]
    GrpcServer(#[from] tonic::transport::Error),
    /// The SSRF guard turned a delivery target down.
    #[error("{0}")]
    TargetRefused(crate::ssrf::Refusal),
}
