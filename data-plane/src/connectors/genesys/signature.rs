//! Genesys's `X-Hub-Signature-256` on outbound messages: `sha256=` + base64 of HMAC-SHA256 under
//! the integration's signature secret token, over the raw body (base64, not the hex GitHub uses).

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
const PREFIX: &str = "sha256=";

/// Whether `header` signs `body` under `secret`; compared in constant time.
pub fn verify(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(claimed) = header.map(str::trim).and_then(strip_prefix) else {
        return false;
    };
    // An empty secret would let anyone sign; the control plane never stores one, but a node
    // must not rely on that.
    if secret.is_empty() {
        return false;
    }
    // LINE's signature is the same construction (base64 HMAC-SHA256 over the raw body), and
    // its check already compares in constant time.
    hookplane_verify::line::verify(secret.as_bytes(), body, claimed).is_ok()
}

fn strip_prefix(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_at_checked(PREFIX.len())?;
    scheme.eq_ignore_ascii_case(PREFIX).then_some(rest)
}

/// The header value for `body`, as Genesys computes it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!(
        "{PREFIX}{}",
        hookplane_verify::line::sign(secret.as_bytes(), body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"m1","type":"Text","text":"hello"}"#;

    #[test]
    fn a_signature_over_the_raw_body_is_accepted() {
        assert!(verify("s3cret", BODY, Some(&sign("s3cret", BODY))));
    }

    #[test]
    fn the_signature_is_base64_with_the_sha256_prefix() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), base64.
        assert_eq!(
            sign("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
    }

    #[test]
    fn another_secret_is_refused() {
        assert!(!verify("other", BODY, Some(&sign("s3cret", BODY))));
    }

    #[test]
    fn a_changed_body_is_refused() {
        let header = sign("s3cret", BODY);
        assert!(!verify(
            "s3cret",
            br#"{"id":"m1","type":"Text","text":"hellO"}"#,
            Some(&header)
        ));
    }

    #[test]
    fn a_missing_header_is_refused() {
        assert!(!verify("s3cret", BODY, None));
    }

    #[test]
    fn a_signature_without_its_prefix_is_refused() {
        let bare = hookplane_verify::line::sign(b"s3cret", BODY);
        assert!(!verify("s3cret", BODY, Some(&bare)));
    }

    #[test]
    fn a_hex_signature_is_refused() {
        let header = format!("sha256={}", "ab".repeat(32));
        assert!(!verify("s3cret", BODY, Some(&header)));
    }

    #[test]
    fn an_empty_secret_accepts_nothing() {
        assert!(!verify("", BODY, Some(&sign("", BODY))));
    }
}
