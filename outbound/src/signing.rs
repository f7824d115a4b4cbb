//! The signature headers of one event webhook attempt, made at attempt time over exactly the
//! bytes sent (PROTOCOLS.md §2 and §3).
//!
//! MAAC signs with the current share secret only, the whole `whsec_...` string as HMAC key: a
//! rotation invalidates the old secret at once, as MAAC documents. Standard Webhooks signs with
//! every secret in force (the decoded bytes as key), so during a rotation's grace period a receiver
//! holding either secret verifies. Its ed25519 variant does the same with `v1a` signatures, each
//! secret in force being a `whsk_` signing key.

use std::time::SystemTime;

use hookplane_proto::v1::{NodeSecret, SignatureScheme};
use hookplane_verify::{maac, standard, standard_ed25519};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::Error;

/// The content type of every event webhook.
pub const JSON_UTF8: &str = "application/json; charset=utf-8";

/// The secrets of `secrets` (current first) still in force at `now`, in the same order.
pub fn secrets_in_force(secrets: &[NodeSecret], now: SystemTime) -> Vec<&str> {
    secrets
        .iter()
        .filter(|s| {
            s.valid_until
                .and_then(|t| SystemTime::try_from(t).ok())
                .is_none_or(|until| until > now)
        })
        .map(|s| s.secret.as_str())
        .collect()
}

/// One attempt to sign.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The event id: `CrescLab-Idempotency-Key` and `webhook-id`, the same on every retry.
    pub event_id: &'a str,
    /// When the attempt is made, in unix seconds (`webhook-timestamp`).
    pub unix_time: i64,
    /// The exact body that will be sent.
    pub body: &'a [u8],
}

/// The headers of `attempt` under `scheme`, signed with `secrets` (current first).
pub fn headers(
    scheme: SignatureScheme,
    secrets: &[&str],
    attempt: Attempt<'_>,
) -> Result<HeaderMap, Error> {
    let current = secrets.first().ok_or(Error::NoSecret)?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    let (with_maac, with_standard) = match scheme {
        SignatureScheme::Unspecified | SignatureScheme::Maac => (true, false),
        SignatureScheme::StandardWebhooks | SignatureScheme::StandardWebhooksEd25519 => {
            (false, true)
        }
        SignatureScheme::Both => (true, true),
    };
    if with_maac {
        insert(
            &mut headers,
            maac::SIGNATURE_HEADER,
            &maac::sign(current.as_bytes(), attempt.body),
        );
        insert(&mut headers, maac::IDEMPOTENCY_HEADER, attempt.event_id);
    }
    if with_standard {
        let mut signatures = Vec::with_capacity(secrets.len());
        for secret in secrets {
            signatures.push(standard_entry(scheme, secret, attempt)?);
        }
        insert(&mut headers, standard::ID_HEADER, attempt.event_id);
        insert(
            &mut headers,
            standard::TIMESTAMP_HEADER,
            &attempt.unix_time.to_string(),
        );
        insert(
            &mut headers,
            standard::SIGNATURE_HEADER,
            &signatures.join(" "),
        );
    }
    Ok(headers)
}

/// One `webhook-signature` entry of `attempt` under `secret`: `v1a` (ed25519) for
/// STANDARD_WEBHOOKS_ED25519, `v1` (HMAC) otherwise.
fn standard_entry(
    scheme: SignatureScheme,
    secret: &str,
    attempt: Attempt<'_>,
) -> Result<String, Error> {
    let Attempt {
        event_id,
        unix_time,
        body,
    } = attempt;
    Ok(if scheme == SignatureScheme::StandardWebhooksEd25519 {
        let key = standard_ed25519::SigningKey::parse(secret).map_err(Error::UnusableSecret)?;
        standard_ed25519::sign(&key, event_id, unix_time, body)
    } else {
        let key = standard::Secret::parse(secret).map_err(Error::UnusableSecret)?;
        standard::sign(&key, event_id, unix_time, body)
    })
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Names are this crate's constants; values are hex, base64, digits and our own ids.
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const OLD: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] =
        br#"{"timestamp":"2025-01-01T00:00:00.000+00:00","topic":"prize.points_added","data":{}}"#;
    const NOW: i64 = 1_735_689_600;

    fn attempt() -> Attempt<'static> {
        Attempt {
            event_id: "evt_1",
            unix_time: NOW,
            body: BODY,
        }
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn parsed(secret: &str) -> standard::Secret {
        standard::Secret::parse(secret).unwrap()
    }

    fn verify_standard(headers: &HeaderMap, secrets: &[standard::Secret]) -> bool {
        standard::verify(
            secrets,
            header(headers, "webhook-id").unwrap(),
            header(headers, "webhook-timestamp").unwrap(),
            header(headers, "webhook-signature").unwrap(),
            BODY,
            NOW,
        )
        .is_ok()
    }

    #[test]
    fn maac_verifies_with_hookplane_verify_under_the_whole_secret_string() {
        let headers = headers(SignatureScheme::Maac, &[NEW], attempt()).unwrap();
        let signature = header(&headers, "cresclab-signature").unwrap();
        assert_eq!(maac::verify(NEW.as_bytes(), BODY, signature), Ok(()));
        assert_eq!(signature, signature.to_lowercase());
    }

    #[test]
    fn maac_carries_the_event_id_as_idempotency_key_and_json_content_type() {
        let headers = headers(SignatureScheme::Maac, &[NEW], attempt()).unwrap();
        assert_eq!(header(&headers, "cresclab-idempotency-key"), Some("evt_1"));
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/json; charset=utf-8")
        );
        assert!(headers.get("webhook-signature").is_none());
    }

    #[test]
    fn maac_signs_with_the_current_secret_only() {
        let headers = headers(SignatureScheme::Maac, &[NEW, OLD], attempt()).unwrap();
        let signature = header(&headers, "cresclab-signature").unwrap();
        assert!(maac::verify(OLD.as_bytes(), BODY, signature).is_err());
        assert!(maac::verify(NEW.as_bytes(), BODY, signature).is_ok());
    }

    #[test]
    fn standard_webhooks_verifies_with_hookplane_verify() {
        let headers = headers(SignatureScheme::StandardWebhooks, &[NEW], attempt()).unwrap();
        assert_eq!(header(&headers, "webhook-id"), Some("evt_1"));
        assert_eq!(
            header(&headers, "webhook-timestamp"),
            Some(NOW.to_string().as_str())
        );
        assert!(verify_standard(&headers, &[parsed(NEW)]));
        assert!(headers.get("cresclab-signature").is_none());
    }

    #[test]
    fn standard_webhooks_matches_the_specification_vector() {
        let headers = headers(
            SignatureScheme::StandardWebhooks,
            &[OLD],
            Attempt {
                event_id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                unix_time: 1_649_367_553,
                body: br#"{"email":"test@example.com","username":"test_user"}"#,
            },
        )
        .unwrap();
        assert_eq!(
            header(&headers, "webhook-signature"),
            Some("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    #[test]
    fn during_a_grace_period_standard_webhooks_carries_one_signature_per_secret() {
        let headers = headers(SignatureScheme::StandardWebhooks, &[NEW, OLD], attempt()).unwrap();
        let signature = header(&headers, "webhook-signature").unwrap();
        assert_eq!(signature.split(' ').count(), 2);
        assert!(verify_standard(&headers, &[parsed(NEW)]));
        assert!(verify_standard(&headers, &[parsed(OLD)]));
    }

    const SIGNING_KEY: &str = "whsk_VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=";

    fn public_key(signing_key: &str) -> standard_ed25519::PublicKey {
        standard_ed25519::SigningKey::parse(signing_key)
            .unwrap()
            .public_key()
    }

    fn verify_ed25519(headers: &HeaderMap, keys: &[standard_ed25519::PublicKey]) -> bool {
        standard_ed25519::verify(
            keys,
            header(headers, "webhook-id").unwrap(),
            header(headers, "webhook-timestamp").unwrap(),
            header(headers, "webhook-signature").unwrap(),
            BODY,
            NOW,
        )
        .is_ok()
    }

    #[test]
    fn ed25519_signs_v1a_that_verifies_with_the_public_key_alone() {
        let headers = headers(
            SignatureScheme::StandardWebhooksEd25519,
            &[SIGNING_KEY],
            attempt(),
        )
        .unwrap();
        let signature = header(&headers, "webhook-signature").unwrap();
        assert!(signature.starts_with("v1a,"), "{signature}");
        assert_eq!(header(&headers, "webhook-id"), Some("evt_1"));
        assert!(verify_ed25519(&headers, &[public_key(SIGNING_KEY)]));
        assert!(headers.get("cresclab-signature").is_none());
    }

    #[test]
    fn ed25519_matches_the_reference_library_vector() {
        let headers = headers(
            SignatureScheme::StandardWebhooksEd25519,
            &[SIGNING_KEY],
            Attempt {
                event_id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
                unix_time: 1_614_265_330,
                body: br#"{"test": 2432232314}"#,
            },
        )
        .unwrap();
        assert_eq!(
            header(&headers, "webhook-signature"),
            Some(
                "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
            )
        );
    }

    #[test]
    fn during_a_grace_period_ed25519_carries_one_signature_per_key() {
        let other = standard_ed25519::SigningKey::from_bytes(&[9u8; 32]).to_whsk_string();
        let headers = headers(
            SignatureScheme::StandardWebhooksEd25519,
            &[&other, SIGNING_KEY],
            attempt(),
        )
        .unwrap();
        let signature = header(&headers, "webhook-signature").unwrap();
        assert_eq!(signature.split(' ').count(), 2);
        assert!(verify_ed25519(&headers, &[public_key(&other)]));
        assert!(verify_ed25519(&headers, &[public_key(SIGNING_KEY)]));
    }

    #[test]
    fn ed25519_refuses_a_symmetric_secret_without_showing_it() {
        let err = headers(SignatureScheme::StandardWebhooksEd25519, &[NEW], attempt()).unwrap_err();
        assert!(matches!(err, Error::UnusableSecret(_)));
        assert!(!err.to_string().contains("MfKQ9r8G"), "{err}");
    }

    #[test]
    fn both_carries_both_header_sets() {
        let headers = headers(SignatureScheme::Both, &[NEW], attempt()).unwrap();
        let maac_signature = header(&headers, "cresclab-signature").unwrap();
        assert!(maac::verify(NEW.as_bytes(), BODY, maac_signature).is_ok());
        assert!(verify_standard(&headers, &[parsed(NEW)]));
    }

    #[test]
    fn an_unspecified_scheme_signs_like_maac() {
        let headers = headers(SignatureScheme::Unspecified, &[NEW], attempt()).unwrap();
        assert!(headers.get("cresclab-signature").is_some());
        assert!(headers.get("webhook-signature").is_none());
    }

    #[test]
    fn without_a_secret_nothing_is_signed() {
        assert!(matches!(
            headers(SignatureScheme::Maac, &[], attempt()),
            Err(Error::NoSecret)
        ));
    }

    #[test]
    fn an_unusable_secret_is_an_error_that_does_not_show_it() {
        let err = headers(
            SignatureScheme::StandardWebhooks,
            &["whsec_short"],
            attempt(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("short"), "{err}");
    }

    #[test]
    fn secrets_past_their_grace_period_are_left_out() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW as u64);
        let until = |secs: i64| {
            Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            })
        };
        let secrets = [
            NodeSecret {
                secret: NEW.into(),
                valid_until: None,
            },
            NodeSecret {
                secret: OLD.into(),
                valid_until: until(NOW - 1),
            },
            NodeSecret {
                secret: "whsec_other".into(),
                valid_until: until(NOW + 60),
            },
        ];
        assert_eq!(secrets_in_force(&secrets, now), [NEW, "whsec_other"]);
    }
}
