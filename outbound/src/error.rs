//! The crate's one error type.

/// What can go wrong before a request leaves.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client could not be built (its TLS configuration).
    #[error("http client: {0}")]
    HttpClient(String),
    /// The SSRF guard turned a target address down (raised inside the client's resolver).
    #[error("{0}")]
    TargetRefused(crate::ssrf::Refusal),
    /// No share secret is in force to sign an event with.
    #[error("no share secret in force")]
    NoSecret,
    /// A share secret is not `whsec_` + base64 of 24 to 64 bytes (or, for ed25519, not `whsk_` +
    /// base64 of a 32-byte key). Never holds the secret.
    #[error("share secret unusable: {0}")]
    UnusableSecret(hookplane_verify::Error),
}
