//! The publisher token: `authorization: Bearer <token>`, checked against the SHA-256 the control
//! plane streams, so a node never holds the token itself.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use crate::Error;

const REFUSED: Error = Error::Unauthenticated { role: "publisher" };

/// Ok when the request carries the token whose SHA-256 (hex) is `expected_sha256`.
pub fn check(metadata: &MetadataMap, expected_sha256: &str) -> Result<(), Error> {
    let mut expected = [0u8; 32];
    hex::decode_to_slice(expected_sha256, &mut expected).map_err(|_| REFUSED)?;
    let token = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or(REFUSED)?;
    let presented = Sha256::digest(token.as_bytes());
    // Comparing digests in constant time: how much of a guess matches must not show in timing.
    if bool::from(presented.as_slice().ct_eq(&expected)) {
        Ok(())
    } else {
        Err(REFUSED)
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn metadata(authorization: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", authorization.parse().unwrap());
        m
    }

    #[test]
    fn the_right_token_passes() {
        assert!(check(&metadata("Bearer hp_pub_1"), &sha256_hex("hp_pub_1")).is_ok());
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert!(check(&metadata("bearer hp_pub_1"), &sha256_hex("hp_pub_1")).is_ok());
    }

    #[test]
    fn another_token_is_refused_without_saying_which_was_expected() {
        let err = check(&metadata("Bearer hp_pub_2"), &sha256_hex("hp_pub_1")).unwrap_err();
        assert_eq!(err.to_string(), "missing or invalid publisher token");
    }

    #[test]
    fn a_missing_header_is_refused() {
        assert!(check(&MetadataMap::new(), &sha256_hex("hp_pub_1")).is_err());
    }

    #[test]
    fn a_token_without_the_bearer_scheme_is_refused() {
        assert!(check(&metadata("hp_pub_1"), &sha256_hex("hp_pub_1")).is_err());
    }

    #[test]
    fn nothing_passes_before_the_control_plane_sent_a_hash() {
        assert!(check(&metadata("Bearer "), "").is_err());
        assert!(check(&metadata("Bearer x"), "").is_err());
    }
}
