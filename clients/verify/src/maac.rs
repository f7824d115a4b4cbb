//! MAAC outgoing events: `CrescLab-Signature` = lowercase hex HMAC-SHA256(share secret, body).

use hmac::Mac;

use crate::{Error, mac};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "CrescLab-Signature";
/// The header carrying the event's idempotency key, the same on every retry.
pub const IDEMPOTENCY_HEADER: &str = "CrescLab-Idempotency-Key";

/// The `CrescLab-Signature` value for `body` under the share secret.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    hex::encode(mac::digest(secret, body))
}

/// Checks a `CrescLab-Signature` header (hex, either case) against the exact received bytes, in
/// constant time.
pub fn verify(secret: &[u8], body: &[u8], signature_header: &str) -> Result<(), Error> {
    // hex::decode accepts both cases, which is what receivers written by hand tend to send.
    let claimed =
        hex::decode(signature_header.trim()).map_err(|_| Error::MalformedSignature("hex"))?;
    let mut mac = mac::keyed(secret);
    mac.update(body);
    mac.verify_slice(&claimed)
        .map_err(|_| Error::SignatureMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const BODY: &[u8] =
        br#"{"timestamp":"2025-01-01T00:00:00+00:00","topic":"prize.points_added","data":{}}"#;

    #[test]
    fn sign_is_lowercase_hex_of_hmac_sha256() {
        // The LINE SDK vector's digest, hex encoded instead of base64.
        assert_eq!(
            sign(b"test_secret", br#"{"hello":"world"}"#),
            "b7b1e7e190c7aace9efb076f2394f2408bf389ed0398c526b97101ab2c84fed3"
        );
    }

    #[test]
    fn verify_accepts_its_own_signature() {
        assert_eq!(verify(SECRET, BODY, &sign(SECRET, BODY)), Ok(()));
    }

    #[test]
    fn verify_accepts_uppercase_hex() {
        let upper = sign(SECRET, BODY).to_uppercase();
        assert_eq!(verify(SECRET, BODY, &upper), Ok(()));
    }

    #[test]
    fn verify_ignores_surrounding_whitespace() {
        let header = format!(" {} ", sign(SECRET, BODY));
        assert_eq!(verify(SECRET, BODY, &header), Ok(()));
    }

    #[test]
    fn verify_rejects_a_tampered_body() {
        let signature = sign(SECRET, BODY);
        let mut body = BODY.to_vec();
        body[2] ^= 1;
        assert_eq!(
            verify(SECRET, &body, &signature),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_a_wrong_secret() {
        let signature = sign(b"another secret", BODY);
        assert_eq!(
            verify(SECRET, BODY, &signature),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_a_header_that_is_not_hex() {
        assert_eq!(
            verify(SECRET, BODY, "zz"),
            Err(Error::MalformedSignature("hex"))
        );
    }
}
