//! Who may publish: `authorization: Bearer <token>`, checked against the SHA-256 hashes the
//! control plane streams (the bootstrap publisher token's, and each API token's that may publish),
//! so a node never holds a token itself. A revoked token leaves the config stream's snapshot, so
//! the next publish after the revocation reaches the node is refused.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use crate::Error;
use crate::config::Snapshot;

const REFUSED: Error = Error::Unauthenticated { role: "publisher" };

/// The tenants a caller may publish for.
#[derive(Debug, PartialEq, Eq)]
pub enum Publishing {
    /// The bootstrap publisher token, or a ROLE_OPERATOR token.
    AnyTenant,
    /// A ROLE_PUBLISHER token of this tenant.
    Tenant(String),
}

impl Publishing {
    /// Ok when this caller may publish for `tenant_id`.
    pub fn allows(&self, tenant_id: &str) -> Result<(), Error> {
        match self {
            Publishing::AnyTenant => Ok(()),
            Publishing::Tenant(own) if own == tenant_id => Ok(()),
            Publishing::Tenant(own) => Err(Error::PermissionDenied(format!(
                "this token may publish for tenant \"{own}\" only"
            ))),
        }
    }
}

/// Who passed the check.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub publishing: Publishing,
    /// The API token's id; `None` for the bootstrap publisher token.
    pub token_id: Option<String>,
}

/// Whether `presented` hashes to `expected_sha256` (hex), compared in constant time: how much
/// of a guess matches must not show in timing.
fn matches(presented: &[u8; 32], expected_sha256: &str) -> bool {
    let mut expected = [0u8; 32];
    hex::decode_to_slice(expected_sha256, &mut expected).is_ok()
        && bool::from(presented.ct_eq(&expected))
}

/// Who the request's bearer token is, as of `now`: an API token the snapshot holds (found by the
/// id its secret names, refused once expired), else the bootstrap publisher token.
pub fn check(
    metadata: &MetadataMap,
    snapshot: &Snapshot,
    now: SystemTime,
) -> Result<Verified, Error> {
    let token = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or(REFUSED)?;
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(api_token) =
        hookplane_proto::token_secret::token_id(token).and_then(|id| snapshot.publisher_token(id))
    {
        let expired = api_token.expire_time.as_ref().is_some_and(|end| {
            let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
            i64::try_from(now.as_secs()).unwrap_or(i64::MAX) >= end.seconds
        });
        if !matches(&presented, &api_token.secret_sha256) || expired {
            return Err(REFUSED);
        }
        let publishing = if api_token.tenant_id.is_empty() {
            Publishing::AnyTenant
        } else {
            Publishing::Tenant(api_token.tenant_id.clone())
        };
        return Ok(Verified {
            publishing,
            token_id: Some(api_token.id.clone()),
        });
    }
    if matches(&presented, &snapshot.publisher_token_sha256) {
        Ok(Verified {
            publishing: Publishing::AnyTenant,
            token_id: None,
        })
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
    use std::time::Duration;

    use hookplane_proto::v1::{
        ConfigResource, ConfigUpdate, NodePublisherToken, config_resource::Resource,
    };

    use super::*;

    fn sha256_hex(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    const TOKEN_ID: &str = "tok_01JABCDEFGHJKMNPQRSTVWXYZ0";
    const TOKEN_SECRET: &str = "hp_tok_01JABCDEFGHJKMNPQRSTVWXYZ0_random-part";

    /// A snapshot with the bootstrap token `bootstrap` and, when `tenant` is given, the API
    /// token above for that tenant ("" = any tenant), expiring at `expire_secs` if given.
    fn snapshot(bootstrap: &str, tenant: Option<&str>, expire_secs: Option<i64>) -> Snapshot {
        let upserts = tenant
            .map(|tenant| ConfigResource {
                resource: Some(Resource::PublisherToken(NodePublisherToken {
                    id: TOKEN_ID.into(),
                    secret_sha256: sha256_hex(TOKEN_SECRET),
                    tenant_id: tenant.into(),
                    expire_time: expire_secs
                        .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                })),
            })
            .into_iter()
            .collect();
        Snapshot::default().apply(&ConfigUpdate {
            revision: 1,
            snapshot: true,
            upserts,
            publisher_token_sha256: if bootstrap.is_empty() {
                String::new()
            } else {
                sha256_hex(bootstrap)
            },
            ..ConfigUpdate::default()
        })
    }

    fn check(metadata: &MetadataMap, expected_sha256: &str) -> Result<Verified, Error> {
        let mut s = snapshot("", None, None);
        s.publisher_token_sha256 = expected_sha256.to_owned();
        super::check(metadata, &s, SystemTime::now())
    }

    fn bearer(token: &str) -> MetadataMap {
        metadata(&format!("Bearer {token}"))
    }

    #[test]
    fn a_publisher_token_publishes_for_its_tenant_only() {
        let s = snapshot("hp_pub_1", Some("tnt_a"), None);
        let verified = super::check(&bearer(TOKEN_SECRET), &s, SystemTime::now()).unwrap();
        assert_eq!(verified.token_id.as_deref(), Some(TOKEN_ID));
        let who = verified.publishing;
        assert_eq!(who, Publishing::Tenant("tnt_a".into()));
        assert!(who.allows("tnt_a").is_ok());
        let refused = who.allows("tnt_b").unwrap_err();
        assert_eq!(
            tonic::Status::from(refused).code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn an_operator_token_and_the_bootstrap_token_publish_for_any_tenant() {
        let s = snapshot("hp_pub_1", Some(""), None);
        let now = SystemTime::now();
        assert_eq!(
            super::check(&bearer(TOKEN_SECRET), &s, now)
                .unwrap()
                .publishing,
            Publishing::AnyTenant
        );
        let bootstrap = super::check(&bearer("hp_pub_1"), &s, now).unwrap();
        assert_eq!(bootstrap.publishing, Publishing::AnyTenant);
        assert_eq!(bootstrap.token_id, None);
    }

    #[test]
    fn a_token_the_snapshot_no_longer_holds_is_refused() {
        let s = snapshot("hp_pub_1", None, None);
        let refused = super::check(&bearer(TOKEN_SECRET), &s, SystemTime::now()).unwrap_err();
        assert_eq!(refused.to_string(), "missing or invalid publisher token");
    }

    #[test]
    fn a_wrong_secret_naming_a_held_token_is_refused() {
        let s = snapshot("hp_pub_1", Some("tnt_a"), None);
        let forged = format!("hp_{TOKEN_ID}_guess");
        assert!(super::check(&bearer(&forged), &s, SystemTime::now()).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let now = SystemTime::now();
        let seconds = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let s = snapshot("", Some("tnt_a"), Some(seconds + 60));
        assert!(super::check(&bearer(TOKEN_SECRET), &s, now).is_ok());
        let later = now + Duration::from_secs(61);
        assert!(super::check(&bearer(TOKEN_SECRET), &s, later).is_err());
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
