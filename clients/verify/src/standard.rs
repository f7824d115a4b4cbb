//! Standard Webhooks (standardwebhooks.com, also Svix): `webhook-signature` holds one or more
//! space-separated `v1,<base64>` entries, each an HMAC-SHA256 over `{id}.{timestamp}.{body}`.

use std::fmt;

use base64::{
    Engine,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig, general_purpose::STANDARD},
};
use hmac::Mac;

use crate::{Error, mac};

/// The header carrying the message id, the same on every retry.
pub const ID_HEADER: &str = "webhook-id";
/// The header carrying the signing time in unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The header carrying the space-separated signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// The prefix of a secret's string form.
pub const SECRET_PREFIX: &str = "whsec_";
/// How far a `webhook-timestamp` may be from the receiver's clock, either way.
pub const TOLERANCE_SECS: i64 = 300;

const MIN_SECRET_BYTES: usize = 24;
const MAX_SECRET_BYTES: usize = 64;
const VERSION: &str = "v1";

/// Secrets are handed around by people who sometimes drop the `=` padding; both forms decode.
pub(crate) const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A signing key: the decoded bytes of a `whsec_...` secret. Its `Debug` output hides the key.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// Parses `whsec_<base64>`; like the reference libraries, the prefix may be left out.
    pub fn parse(s: &str) -> Result<Secret, Error> {
        let s = s.trim();
        let encoded = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        let key = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| Error::InvalidSecret("not base64 after the whsec_ prefix"))?;
        Secret::from_bytes(&key)
    }

    /// Wraps raw key bytes (24 to 64 of them), such as freshly generated random ones.
    pub fn from_bytes(key: &[u8]) -> Result<Secret, Error> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(Error::InvalidSecret("the key must be 24 to 64 bytes"));
        }
        Ok(Secret { key: key.to_vec() })
    }

    /// The HMAC key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.key
    }

    /// The `whsec_<base64>` form to hand to a receiver.
    pub fn to_whsec_string(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn keyed_over(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> mac::HmacSha256 {
    // Fed in parts so a large body is never copied just to prepend the id and timestamp.
    let mut mac = mac::keyed(&secret.key);
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// One `webhook-signature` entry, `v1,<base64>`, for the message.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = keyed_over(secret, msg_id, timestamp, body)
        .finalize()
        .into_bytes();
    format!("{VERSION},{}", STANDARD.encode(digest))
}

/// Checks a received message. Passes when any `v1` entry of the signature header matches any of
/// `secrets` (several secrets cover a rotation's grace period); entries of other versions are
/// ignored. Refuses a timestamp more than [`TOLERANCE_SECS`] away from `now_unix`.
pub fn verify(
    secrets: &[Secret],
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), Error> {
    let timestamp = checked_timestamp(timestamp_header, now_unix)?;
    let claimed: Vec<Vec<u8>> = entries(signature_header, VERSION).collect();
    for secret in secrets {
        let expected = keyed_over(secret, msg_id, timestamp, body);
        // verify_slice consumes the MAC, so each candidate gets its own clone.
        if claimed
            .iter()
            .any(|candidate| expected.clone().verify_slice(candidate).is_ok())
        {
            return Ok(());
        }
    }
    Err(Error::SignatureMismatch)
}

/// The `webhook-timestamp` header in unix seconds, refused when more than [`TOLERANCE_SECS`] away
/// from `now_unix`.
pub(crate) fn checked_timestamp(timestamp_header: &str, now_unix: i64) -> Result<i64, Error> {
    let timestamp: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| Error::MalformedTimestamp)?;
    let skew = now_unix.saturating_sub(timestamp).saturating_abs();
    if skew > TOLERANCE_SECS {
        return Err(Error::TimestampOutOfTolerance(skew));
    }
    Ok(timestamp)
}

/// The decoded signatures of the `version` entries of a `webhook-signature` header; entries of
/// other versions and entries that are not base64 are skipped.
pub(crate) fn entries<'a>(
    signature_header: &'a str,
    version: &'a str,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    signature_header
        .split_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(move |(v, _)| *v == version)
        .filter_map(|(_, encoded)| STANDARD.decode(encoded).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector of PROTOCOLS.md §3 (the Standard Webhooks specification's own).
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: i64 = 1_649_367_553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn secret() -> Secret {
        Secret::parse(SECRET).unwrap()
    }

    fn other_secret() -> Secret {
        Secret::from_bytes(&[7u8; 32]).unwrap()
    }

    fn check(
        secrets: &[Secret],
        signature_header: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), Error> {
        verify(
            secrets,
            MSG_ID,
            &TIMESTAMP.to_string(),
            signature_header,
            body,
            now,
        )
    }

    #[test]
    fn sign_matches_the_specification_vector() {
        assert_eq!(sign(&secret(), MSG_ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn verify_accepts_the_specification_vector() {
        assert_eq!(check(&[secret()], SIGNATURE, BODY, TIMESTAMP), Ok(()));
    }

    #[test]
    fn parse_accepts_a_secret_without_the_prefix() {
        let bare = Secret::parse(SECRET.trim_start_matches(SECRET_PREFIX)).unwrap();
        assert_eq!(bare.as_bytes(), secret().as_bytes());
    }

    #[test]
    fn parse_accepts_base64_without_padding() {
        let padded = Secret::from_bytes(&[1u8; 32]).unwrap().to_whsec_string();
        assert!(padded.ends_with('='));
        let unpadded = Secret::parse(padded.trim_end_matches('=')).unwrap();
        assert_eq!(unpadded.as_bytes(), &[1u8; 32]);
    }

    #[test]
    fn parse_rejects_a_key_shorter_than_24_bytes() {
        let short = format!("whsec_{}", STANDARD.encode([1u8; 23]));
        assert!(matches!(
            Secret::parse(&short),
            Err(Error::InvalidSecret(_))
        ));
    }

    #[test]
    fn parse_rejects_a_key_longer_than_64_bytes() {
        let long = format!("whsec_{}", STANDARD.encode([1u8; 65]));
        assert!(matches!(Secret::parse(&long), Err(Error::InvalidSecret(_))));
    }

    #[test]
    fn parse_rejects_text_that_is_not_base64() {
        assert!(matches!(
            Secret::parse("whsec_not*base64*at*all*but*long*enough"),
            Err(Error::InvalidSecret(_))
        ));
    }

    #[test]
    fn whsec_string_round_trips() {
        let again = Secret::parse(&secret().to_whsec_string()).unwrap();
        assert_eq!(again.as_bytes(), secret().as_bytes());
    }

    #[test]
    fn debug_output_hides_the_key() {
        assert_eq!(format!("{:?}", secret()), "Secret(<redacted>)");
    }

    #[test]
    fn verify_rejects_a_wrong_signature() {
        let wrong = sign(&other_secret(), MSG_ID, TIMESTAMP, BODY);
        assert_eq!(
            check(&[secret()], &wrong, BODY, TIMESTAMP),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_a_tampered_body() {
        let body = br#"{"email":"test@example.com","username":"test_user2"}"#;
        assert_eq!(
            check(&[secret()], SIGNATURE, body, TIMESTAMP),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_a_signature_made_for_another_message_id() {
        assert_eq!(
            verify(
                &[secret()],
                "msg_other",
                &TIMESTAMP.to_string(),
                SIGNATURE,
                BODY,
                TIMESTAMP
            ),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_accepts_a_timestamp_exactly_at_the_tolerance() {
        assert_eq!(
            check(&[secret()], SIGNATURE, BODY, TIMESTAMP + TOLERANCE_SECS),
            Ok(())
        );
        assert_eq!(
            check(&[secret()], SIGNATURE, BODY, TIMESTAMP - TOLERANCE_SECS),
            Ok(())
        );
    }

    #[test]
    fn verify_rejects_a_stale_timestamp() {
        assert_eq!(
            check(&[secret()], SIGNATURE, BODY, TIMESTAMP + TOLERANCE_SECS + 1),
            Err(Error::TimestampOutOfTolerance(TOLERANCE_SECS + 1))
        );
    }

    #[test]
    fn verify_rejects_a_timestamp_from_the_future() {
        assert_eq!(
            check(&[secret()], SIGNATURE, BODY, TIMESTAMP - 600),
            Err(Error::TimestampOutOfTolerance(600))
        );
    }

    #[test]
    fn verify_rejects_a_timestamp_that_is_not_a_number() {
        assert_eq!(
            verify(&[secret()], MSG_ID, "yesterday", SIGNATURE, BODY, TIMESTAMP),
            Err(Error::MalformedTimestamp)
        );
    }

    #[test]
    fn verify_survives_extreme_timestamps() {
        assert_eq!(
            verify(
                &[secret()],
                MSG_ID,
                &i64::MIN.to_string(),
                SIGNATURE,
                BODY,
                i64::MAX
            ),
            Err(Error::TimestampOutOfTolerance(i64::MAX))
        );
    }

    #[test]
    fn verify_accepts_any_matching_entry_among_several() {
        let wrong = sign(&other_secret(), MSG_ID, TIMESTAMP, BODY);
        let header = format!("{wrong} {SIGNATURE}");
        assert_eq!(check(&[secret()], &header, BODY, TIMESTAMP), Ok(()));
    }

    #[test]
    fn verify_accepts_any_matching_secret_among_several() {
        assert_eq!(
            check(&[other_secret(), secret()], SIGNATURE, BODY, TIMESTAMP),
            Ok(())
        );
    }

    #[test]
    fn verify_ignores_entries_of_other_versions() {
        let digest = SIGNATURE.trim_start_matches("v1,");
        let header = format!("v1a,{digest} v2,{digest}");
        assert_eq!(
            check(&[secret()], &header, BODY, TIMESTAMP),
            Err(Error::SignatureMismatch)
        );
        let header = format!("v1a,{digest} {SIGNATURE}");
        assert_eq!(check(&[secret()], &header, BODY, TIMESTAMP), Ok(()));
    }

    #[test]
    fn verify_skips_entries_that_are_not_base64() {
        let header = format!("v1,%%% garbage {SIGNATURE}");
        assert_eq!(check(&[secret()], &header, BODY, TIMESTAMP), Ok(()));
    }

    #[test]
    fn verify_rejects_when_no_secret_is_given() {
        assert_eq!(
            check(&[], SIGNATURE, BODY, TIMESTAMP),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_an_empty_signature_header() {
        assert_eq!(
            check(&[secret()], "", BODY, TIMESTAMP),
            Err(Error::SignatureMismatch)
        );
    }
}
