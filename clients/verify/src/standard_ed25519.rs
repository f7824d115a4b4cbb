//! Standard Webhooks asymmetric signatures: `webhook-signature` entries `v1a,<base64>`, each an
//! ed25519 signature over `{id}.{timestamp}.{body}`. The sender keeps the signing key (`whsk_` +
//! base64 of the 32-byte ed25519 secret key); a receiver needs only the public key (`whpk_` +
//! base64 of its 32 bytes), so nothing it holds can forge a webhook.
//!
//! The headers, the signed content and the timestamp tolerance are those of [`crate::standard`].

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer, VerifyingKey};

use crate::Error;
use crate::standard::{self, LENIENT_BASE64};

/// The prefix of a signing key's string form.
pub const SIGNING_KEY_PREFIX: &str = "whsk_";
/// The prefix of a public key's string form.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

const VERSION: &str = "v1a";

/// The base64 after `prefix` (which, as the reference libraries allow, may be left out).
fn decoded(s: &str, prefix: &str, what: &'static str) -> Result<Vec<u8>, Error> {
    let s = s.trim();
    LENIENT_BASE64
        .decode(s.strip_prefix(prefix).unwrap_or(s))
        .map_err(|_| Error::InvalidKey(what))
}

/// An ed25519 signing key, `whsk_...`. Its `Debug` output hides the key; it is wiped when dropped.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// Parses `whsk_<base64>` of the 32-byte secret key (RFC 8032's, as the reference library
    /// writes it). The 64-byte form some libraries write (secret key then public key) is
    /// accepted too when its halves agree.
    pub fn parse(s: &str) -> Result<SigningKey, Error> {
        let bytes = decoded(s, SIGNING_KEY_PREFIX, "not base64 after the whsk_ prefix")?;
        let key = if let Ok(secret) = <[u8; 32]>::try_from(bytes.as_slice()) {
            ed25519_dalek::SigningKey::from_bytes(&secret)
        } else if let Ok(pair) = <[u8; 64]>::try_from(bytes.as_slice()) {
            ed25519_dalek::SigningKey::from_keypair_bytes(&pair)
                .map_err(|_| Error::InvalidKey("the public half does not match the secret key"))?
        } else {
            return Err(Error::InvalidKey("a signing key is 32 bytes"));
        };
        Ok(SigningKey { key })
    }

    /// The key whose 32-byte secret is `secret`, such as freshly generated random bytes.
    pub fn from_bytes(secret: &[u8; 32]) -> SigningKey {
        SigningKey {
            key: ed25519_dalek::SigningKey::from_bytes(secret),
        }
    }

    /// The `whsk_<base64>` form, for the sender's own keeping.
    pub fn to_whsk_string(&self) -> String {
        format!(
            "{SIGNING_KEY_PREFIX}{}",
            STANDARD.encode(self.key.as_bytes())
        )
    }

    /// The public key to hand to receivers.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// An ed25519 public key, `whpk_...`: what a receiver verifies with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `whpk_<base64>` of the 32-byte public key; the prefix may be left out.
    pub fn parse(s: &str) -> Result<PublicKey, Error> {
        let bytes = decoded(s, PUBLIC_KEY_PREFIX, "not base64 after the whpk_ prefix")?;
        let bytes = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| Error::InvalidKey("a public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| Error::InvalidKey("not a point of the ed25519 curve"))?;
        Ok(PublicKey { key })
    }

    /// The `whpk_<base64>` form to hand to a receiver.
    pub fn to_whpk_string(&self) -> String {
        format!(
            "{PUBLIC_KEY_PREFIX}{}",
            STANDARD.encode(self.key.as_bytes())
        )
    }
}

/// `{id}.{timestamp}.{body}`: ed25519 hashes its message twice, so unlike HMAC it cannot be fed
/// in parts.
fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    let mut content = Vec::with_capacity(msg_id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// One `webhook-signature` entry, `v1a,<base64>`, for the message.
pub fn sign(key: &SigningKey, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = key.key.sign(&signed_content(msg_id, timestamp, body));
    format!("{VERSION},{}", STANDARD.encode(signature.to_bytes()))
}

/// Checks a received message. Passes when any `v1a` entry of the signature header verifies under
/// any of `keys` (several keys cover a rotation's grace period); entries of other versions are
/// ignored. Refuses a timestamp more than [`standard::TOLERANCE_SECS`] away from `now_unix`.
///
/// Verification is strict (RFC 8032 canonical encodings, no small-order keys): a signature
/// either verifies or not, and no secret is compared, so there is no timing to leak.
pub fn verify(
    keys: &[PublicKey],
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), Error> {
    let timestamp = standard::checked_timestamp(timestamp_header, now_unix)?;
    let claimed: Vec<Signature> = standard::entries(signature_header, VERSION)
        .filter_map(|bytes| Signature::from_slice(&bytes).ok())
        .collect();
    if claimed.is_empty() || keys.is_empty() {
        return Err(Error::SignatureMismatch);
    }
    let content = signed_content(msg_id, timestamp, body);
    let verified = keys.iter().any(|key| {
        claimed
            .iter()
            .any(|signature| key.key.verify_strict(&content, signature).is_ok())
    });
    if verified {
        Ok(())
    } else {
        Err(Error::SignatureMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector of the reference Go library (libraries/go/webhook_asymmetric_test.go of
    // standard-webhooks), checked independently with Python's `cryptography`.
    const KEY: &str = "whsk_VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==";

    fn key() -> SigningKey {
        SigningKey::parse(KEY).unwrap()
    }

    fn public() -> PublicKey {
        key().public_key()
    }

    fn other_key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn check(keys: &[PublicKey], signature_header: &str, body: &[u8]) -> Result<(), Error> {
        verify(
            keys,
            MSG_ID,
            &TIMESTAMP.to_string(),
            signature_header,
            body,
            TIMESTAMP,
        )
    }

    #[test]
    fn sign_matches_the_reference_library_vector() {
        assert_eq!(sign(&key(), MSG_ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn verify_accepts_the_reference_library_vector_with_the_public_key_alone() {
        let receiver_key = PublicKey::parse(&public().to_whpk_string()).unwrap();
        assert_eq!(check(&[receiver_key], SIGNATURE, BODY), Ok(()));
    }

    #[test]
    fn the_signing_key_is_the_32_byte_secret_and_round_trips() {
        assert_eq!(key().to_whsk_string(), KEY);
        let bare = SigningKey::parse(KEY.trim_start_matches(SIGNING_KEY_PREFIX)).unwrap();
        assert_eq!(bare.to_whsk_string(), KEY);
    }

    #[test]
    fn the_public_key_is_whpk_and_base64_of_32_bytes() {
        let whpk = public().to_whpk_string();
        let encoded = whpk.strip_prefix("whpk_").unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap().len(), 32);
        assert_eq!(PublicKey::parse(&whpk), Ok(public()));
        assert_eq!(PublicKey::parse(encoded), Ok(public()));
    }

    #[test]
    fn parse_accepts_the_64_byte_form_when_its_halves_agree() {
        let mut pair = key().key.to_keypair_bytes();
        let whole = format!("whsk_{}", STANDARD.encode(pair));
        assert_eq!(SigningKey::parse(&whole).unwrap().to_whsk_string(), KEY);
        pair[40] ^= 1;
        let mismatched = format!("whsk_{}", STANDARD.encode(pair));
        assert!(matches!(
            SigningKey::parse(&mismatched),
            Err(Error::InvalidKey(_))
        ));
    }

    #[test]
    fn parse_rejects_keys_of_other_lengths_and_text_that_is_not_base64() {
        let short = format!("whsk_{}", STANDARD.encode([1u8; 31]));
        assert!(matches!(
            SigningKey::parse(&short),
            Err(Error::InvalidKey(_))
        ));
        let long = format!("whpk_{}", STANDARD.encode([1u8; 33]));
        assert!(matches!(PublicKey::parse(&long), Err(Error::InvalidKey(_))));
        assert!(matches!(
            PublicKey::parse("whpk_not*base64"),
            Err(Error::InvalidKey(_))
        ));
    }

    #[test]
    fn a_signing_key_never_shows_in_debug_output_or_errors() {
        assert_eq!(format!("{:?}", key()), "SigningKey(<redacted>)");
        let err = SigningKey::parse("whsk_c2hvcnQ=").unwrap_err();
        assert!(!err.to_string().contains("c2hvcnQ"), "{err}");
    }

    #[test]
    fn verify_rejects_another_key() {
        assert_eq!(
            check(&[other_key().public_key()], SIGNATURE, BODY),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_a_tampered_body_id_or_timestamp() {
        assert_eq!(
            check(&[public()], SIGNATURE, br#"{"test": 2432232315}"#),
            Err(Error::SignatureMismatch)
        );
        assert_eq!(
            verify(
                &[public()],
                "msg_other",
                &TIMESTAMP.to_string(),
                SIGNATURE,
                BODY,
                TIMESTAMP
            ),
            Err(Error::SignatureMismatch)
        );
        assert_eq!(
            verify(
                &[public()],
                MSG_ID,
                &(TIMESTAMP + 1).to_string(),
                SIGNATURE,
                BODY,
                TIMESTAMP
            ),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_refuses_a_stale_timestamp() {
        assert_eq!(
            verify(
                &[public()],
                MSG_ID,
                &TIMESTAMP.to_string(),
                SIGNATURE,
                BODY,
                TIMESTAMP + standard::TOLERANCE_SECS + 1
            ),
            Err(Error::TimestampOutOfTolerance(standard::TOLERANCE_SECS + 1))
        );
    }

    #[test]
    fn verify_accepts_any_matching_entry_and_any_matching_key() {
        let wrong = sign(&other_key(), MSG_ID, TIMESTAMP, BODY);
        let header = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {wrong} {SIGNATURE}");
        assert_eq!(check(&[public()], &header, BODY), Ok(()));
        assert_eq!(
            check(&[other_key().public_key(), public()], SIGNATURE, BODY),
            Ok(())
        );
    }

    #[test]
    fn verify_ignores_v1_entries_and_cut_signatures() {
        let digest = SIGNATURE.trim_start_matches("v1a,");
        assert_eq!(
            check(&[public()], &format!("v1,{digest}"), BODY),
            Err(Error::SignatureMismatch)
        );
        assert_eq!(
            check(&[public()], "v1a,", BODY),
            Err(Error::SignatureMismatch)
        );
        let cut = STANDARD.encode(&STANDARD.decode(digest).unwrap()[..32]);
        assert_eq!(
            check(&[public()], &format!("v1a,{cut}"), BODY),
            Err(Error::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejects_when_no_key_is_given() {
        assert_eq!(check(&[], SIGNATURE, BODY), Err(Error::SignatureMismatch));
    }
}
