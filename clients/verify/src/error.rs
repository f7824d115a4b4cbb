/// Why a signature, secret or timestamp was refused. Messages never carry key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The signature header is not in the expected encoding (base64, hex or `v1,<base64>`).
    #[error("signature header is not valid {0}")]
    MalformedSignature(&'static str),
    /// The signature is well formed but was made with another key or over other bytes.
    #[error("signature does not match the body")]
    SignatureMismatch,
    /// A Standard Webhooks secret that is not `whsec_` + base64 of 24 to 64 bytes.
    #[error("invalid secret: {0}")]
    InvalidSecret(&'static str),
    /// A Standard Webhooks ed25519 key that is not `whsk_`/`whpk_` + base64 of a usable key.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The `webhook-timestamp` header is not a whole number of unix seconds.
    #[error("webhook timestamp is not unix seconds")]
    MalformedTimestamp,
    /// The `webhook-timestamp` is further from now than the tolerance: a replay or a bad clock.
    #[error("webhook timestamp is {0} seconds away from now, more than the tolerance")]
    TimestampOutOfTolerance(i64),
}
