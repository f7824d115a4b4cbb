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
    /// A CA, client certificate or key given for TLS is unusable.
    #[error("TLS settings: {0}")]
    InvalidTls(String),
    /// TLS settings were given for an `http://` server, which would leave them unused.
    #[error(
        "{server} is plain http:// but a CA or client certificate was given: write https:// to \
         dial it over TLS"
    )]
    TlsWithoutHttps { server: String },
    #[error("{server}: the scheme must be http:// or https://")]
    UnsupportedScheme { server: String },
    /// Deliberately silent about the token itself: it is a credential.
    #[error("the token is not usable in an authorization header (printable ASCII only)")]
    InvalidToken,
}
