/// Why a client could not be made. Failures of calls come back as `tonic::Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid server address {server:?}")]
    InvalidServer {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {server}")]
    Connect {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// Deliberately silent about the token itself: it is a credential.
    #[error("the token is not usable in an authorization header (printable ASCII only)")]
    InvalidToken,
}
