//! x-line-signature: base64(HMAC-SHA256(channel secret, raw body)), checked in constant time
//! against every secret still in force (the current one and any in a rotation's grace period).

use std::time::SystemTime;

use hookplane_proto::v1::NodeSecret;

/// True when `header` is the signature of `body` under one of the secrets in force at `now`.
pub fn verify(secrets: &[NodeSecret], body: &[u8], header: Option<&str>, now: SystemTime) -> bool {
    let Some(header) = header else {
        return false;
    };
    let mut matched = false;
    // Every secret in force is tried, so timing does not tell which one matched.
    for secret in secrets.iter().filter(|s| in_force(s, now)) {
        matched |= hookplane_verify::line::verify(secret.secret.as_bytes(), body, header).is_ok();
    }
    matched
}

fn in_force(secret: &NodeSecret, now: SystemTime) -> bool {
    if secret.secret.is_empty() {
        return false;
    }
    match &secret.valid_until {
        None => true,
        Some(until) => SystemTime::try_from(*until).is_ok_and(|until| now < until),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FIXTURE_SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn secret(s: &str, valid_until: Option<SystemTime>) -> NodeSecret {
        NodeSecret {
            secret: s.to_owned(),
            valid_until: valid_until.map(Into::into),
        }
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        hookplane_verify::line::sign(secret.as_bytes(), body)
    }

    #[test]
    fn the_line_sdk_vector_verifies() {
        let secrets = [secret("test_secret", None)];
        assert!(verify(
            &secrets,
            br#"{"hello":"world"}"#,
            Some("t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tM="),
            SystemTime::now()
        ));
    }

    #[test]
    fn the_shared_fixtures_verify() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/line");
        let body = std::fs::read(dir.join("text.json")).unwrap();
        let secrets = [secret(FIXTURE_SECRET, None)];
        assert!(verify(
            &secrets,
            &body,
            Some("QSwDoi32LtuyD6WmvYv/nL1SF85xwyQGbFI8qtZsyNM="),
            SystemTime::now()
        ));
    }

    #[test]
    fn a_missing_signature_fails() {
        let secrets = [secret("s", None)];
        assert!(!verify(&secrets, b"{}", None, SystemTime::now()));
    }

    #[test]
    fn a_wrong_signature_fails() {
        let secrets = [secret("s", None)];
        let other = sign("other", b"{}");
        assert!(!verify(&secrets, b"{}", Some(&other), SystemTime::now()));
        assert!(!verify(
            &secrets,
            b"{}",
            Some("not base64!"),
            SystemTime::now()
        ));
    }

    #[test]
    fn a_changed_body_fails() {
        let secrets = [secret("s", None)];
        let sig = sign("s", b"{\"a\":1}");
        assert!(!verify(
            &secrets,
            b"{\"a\": 1}",
            Some(&sig),
            SystemTime::now()
        ));
    }

    #[test]
    fn the_previous_secret_verifies_during_the_grace_period() {
        let now = SystemTime::now();
        let secrets = [
            secret("new", None),
            secret("old", Some(now + Duration::from_secs(60))),
        ];
        assert!(verify(&secrets, b"{}", Some(&sign("old", b"{}")), now));
        assert!(verify(&secrets, b"{}", Some(&sign("new", b"{}")), now));
    }

    #[test]
    fn the_previous_secret_fails_once_the_grace_period_is_over() {
        let now = SystemTime::now();
        let secrets = [
            secret("new", None),
            secret("old", Some(now - Duration::from_secs(1))),
        ];
        assert!(!verify(&secrets, b"{}", Some(&sign("old", b"{}")), now));
    }

    #[test]
    fn a_channel_without_secrets_accepts_nothing() {
        assert!(!verify(
            &[],
            b"{}",
            Some(&sign("", b"{}")),
            SystemTime::now()
        ));
        let empty = [secret("", None)];
        assert!(!verify(
            &empty,
            b"{}",
            Some(&sign("", b"{}")),
            SystemTime::now()
        ));
    }
}
