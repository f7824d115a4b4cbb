//! LINE Messaging API webhooks: `x-line-signature` = base64(HMAC-SHA256(channel secret, body)).

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::Mac;

use crate::{Error, mac};

/// The header LINE puts the signature in (HTTP header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "x-line-signature";

/// The `x-line-signature` value for `body` under the channel secret.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    BASE64.encode(mac::digest(secret, body))
}

/// Checks an `x-line-signature` header against the exact received bytes, in constant time.
pub fn verify(secret: &[u8], body: &[u8], signature_header: &str) -> Result<(), Error> {
    let claimed = BASE64
        .decode(signature_header.trim())
        .map_err(|_| Error::MalformedSignature("base64"))?;
    let mut mac = mac::keyed(secret);
    mac.update(body);
    mac.verify_slice(&claimed)
        .map_err(|_| Error::SignatureMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDK_SECRET: &[u8] = b"test_secret";
    const SDK_BODY: &[u8] = br#"{"hello":"world"}"#;
    const SDK_SIGNATURE: &str = "t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tM=";

    #[test]
    fn sign_matches_the_line_sdk_vector() {
        assert_eq!(sign(SDK_SECRET, SDK_BODY), SDK_SIGNATURE);
    }

    #[test]
    fn verify_accepts_the_line_sdk_vector() {
        assert_eq!(verify(SDK_SECRET, SDK_BODY, SDK_SIGNATURE), Ok(()));
    }

    #[test]
    fn verify_ignores_surrounding_whitespace() {
        let header = format!("  {SDK_SIGNATURE}\r\n");
        assert_eq!(verify(SDK_SECRET, SDK_BODY, &header), Ok(()));
    }

    #[test]
    fn verify_rejects_a_tampered_body() {
        let body = br#"{"hello":"world!"}"#;
        assert_eq!(
            verify(SDK_SECRET, body, SDK_SIGNATURE),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_another_channels_secret() {
        assert_eq!(
            verify(b"other_secret", SDK_BODY, SDK_SIGNATURE),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_a_header_that_is_not_base64() {
        assert_eq!(
            verify(SDK_SECRET, SDK_BODY, "not base64 at all!"),
            Err(Error::MalformedSignature("base64"))
        );
    }

    #[test]
    fn verify_rejects_an_empty_header() {
        assert_eq!(
            verify(SDK_SECRET, SDK_BODY, ""),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_a_truncated_signature() {
        let full = BASE64.decode(SDK_SIGNATURE).unwrap();
        let truncated = BASE64.encode(&full[..16]);
        assert_eq!(
            verify(SDK_SECRET, SDK_BODY, &truncated),
            Err(Error::SignatureMismatch)
        );
    }
}
