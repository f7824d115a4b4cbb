//! Genesys Cloud OAuth client credentials (PROTOCOLS.md §4): one token per set of credentials,
//! shared by every message, fetched by one caller while the others wait for it, refreshed
//! shortly before it expires or when Genesys turns it down.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    attempt::{AttemptResult, status_is_retryable},
    connectors::transport::{Post, Transport},
};

pub const TOKEN_PATH: &str = "/oauth/token";
/// Said after a failure of the login call, so the attempt log tells it from the message call.
pub const LOGIN_CONTEXT: &str = " (Genesys login)";
/// Lifetime assumed when the token answer names none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// Where and as whom to log in.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub login_base_url: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
}

impl Credentials<'_> {
    /// Keys the cache without keeping the secret itself as a key.
    fn key(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [self.login_base_url, self.client_id, self.client_secret] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hash.finalize().into()
    }
}

#[derive(Clone)]
struct Token {
    value: String,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Access tokens by credentials; share one per node.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<[u8; 32], Slot>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

impl TokenCache {
    /// A token that is not about to expire: the cached one, or a new one.
    pub async fn token(
        &self,
        transport: &dyn Transport,
        credentials: Credentials<'_>,
        timeout: Duration,
    ) -> Result<String, AttemptResult> {
        let slot = self.slot(&credentials);
        // Held across the login: concurrent callers wait for this one login instead of each
        // making their own.
        let mut held = slot.lock().await;
        if let Some(token) = held.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.value.clone());
        }
        let token = login(transport, credentials, timeout).await?;
        *held = Some(token.clone());
        Ok(token.value)
    }

    /// A new token after Genesys turned `rejected` down; if another caller already replaced
    /// it, that replacement.
    pub async fn refresh(
        &self,
        transport: &dyn Transport,
        credentials: Credentials<'_>,
        rejected: &str,
        timeout: Duration,
    ) -> Result<String, AttemptResult> {
        let slot = self.slot(&credentials);
        let mut held = slot.lock().await;
        if let Some(token) = held
            .as_ref()
            .filter(|t| t.value != rejected && Instant::now() < t.refresh_at)
        {
            return Ok(token.value.clone());
        }
        *held = None;
        let token = login(transport, credentials, timeout).await?;
        *held = Some(token.clone());
        Ok(token.value)
    }

    fn slot(&self, credentials: &Credentials<'_>) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(credentials.key()).or_default())
    }
}

/// How long before its end a token is replaced: a fifth of its life, at most a minute, so a
/// message never leaves with a token that expires on the way.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(MAX_MARGIN)
}

async fn login(
    transport: &dyn Transport,
    credentials: Credentials<'_>,
    timeout: Duration,
) -> Result<Token, AttemptResult> {
    let basic = BASE64.encode(format!(
        "{}:{}",
        credentials.client_id, credentials.client_secret
    ));
    let mut headers = HeaderMap::new();
    let Ok(authorization) = HeaderValue::from_str(&format!("Basic {basic}")) else {
        return Err(AttemptResult::unusable(
            "the Genesys client credentials are not usable in a header",
        ));
    };
    headers.insert(header::AUTHORIZATION, authorization);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let started = Instant::now();
    let reply = transport
        .post(Post {
            url: format!(
                "{}{TOKEN_PATH}",
                credentials.login_base_url.trim_end_matches('/')
            ),
            headers,
            body: Bytes::from_static(b"grant_type=client_credentials"),
            timeout,
        })
        .await
        .map_err(|e| AttemptResult::unanswered(e, LOGIN_CONTEXT))?;
    if !(200..300).contains(&reply.status) {
        return Err(AttemptResult::refused(
            &reply,
            status_is_retryable(reply.status),
            LOGIN_CONTEXT,
        ));
    }
    let Ok(answer) = serde_json::from_slice::<TokenAnswer>(&reply.body) else {
        let mut result = AttemptResult::unusable("Genesys login answered without an access token");
        result.http_status = reply.status;
        if let Some(failure) = result.failure.as_mut() {
            failure.retryable = true;
        }
        return Err(result);
    };
    let lifetime = answer
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIFETIME);
    Ok(Token {
        value: answer.access_token,
        refresh_at: started + lifetime.saturating_sub(refresh_margin(lifetime)),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::connectors::fake_http::{FakeServer, PlainTransport};

    const WAIT: Duration = Duration::from_secs(5);

    /// A login server handing out `token-1`, `token-2`, ... valid `lifetime` seconds.
    async fn login_server(lifetime: u64) -> FakeServer {
        FakeServer::start(move |_, n| {
            (
                200,
                format!(
                    r#"{{"access_token":"token-{}","token_type":"bearer","expires_in":{lifetime}}}"#,
                    n + 1
                ),
            )
        })
        .await
    }

    fn credentials(url: &str) -> Credentials<'_> {
        Credentials {
            login_base_url: url,
            client_id: "client",
            client_secret: "secret",
        }
    }

    #[tokio::test]
    async fn a_login_posts_client_credentials_with_basic_auth() {
        let server = login_server(3600).await;
        let url = server.url();
        let token = TokenCache::default()
            .token(&PlainTransport::default(), credentials(&url), WAIT)
            .await
            .unwrap();
        assert_eq!(token, "token-1");
        let got = server.requests_to(TOKEN_PATH);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].header("authorization"),
            Some(format!("Basic {}", BASE64.encode("client:secret")).as_str())
        );
        assert_eq!(
            got[0].header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(&got[0].body[..], b"grant_type=client_credentials");
    }

    #[tokio::test]
    async fn a_token_is_reused_until_shortly_before_it_expires() {
        let server = login_server(3600).await;
        let url = server.url();
        let cache = TokenCache::default();
        let transport = PlainTransport::default();
        for _ in 0..3 {
            assert_eq!(
                cache
                    .token(&transport, credentials(&url), WAIT)
                    .await
                    .unwrap(),
                "token-1"
            );
        }
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn a_token_near_its_end_is_replaced() {
        let server = login_server(1).await;
        let url = server.url();
        let cache = TokenCache::default();
        let transport = PlainTransport::default();
        cache
            .token(&transport, credentials(&url), WAIT)
            .await
            .unwrap();
        // Valid 1 s, replaced after 0.8 s.
        tokio::time::sleep(Duration::from_millis(850)).await;
        assert_eq!(
            cache
                .token(&transport, credentials(&url), WAIT)
                .await
                .unwrap(),
            "token-2"
        );
    }

    #[test]
    fn the_margin_is_a_fifth_of_the_lifetime_and_at_most_a_minute() {
        assert_eq!(
            refresh_margin(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        assert_eq!(refresh_margin(Duration::from_secs(86_399)), MAX_MARGIN);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_login() {
        let logins = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&logins);
        let server = FakeServer::start_slow(Some(Duration::from_millis(200)), move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            (
                200,
                r#"{"access_token":"shared","expires_in":3600}"#.to_owned(),
            )
        })
        .await;
        let url = server.url();
        let cache = TokenCache::default();
        let transport = PlainTransport::default();
        let calls = (0..5).map(|_| cache.token(&transport, credentials(&url), WAIT));
        let tokens = futures::future::join_all(calls).await;
        assert!(tokens.iter().all(|t| t.as_deref() == Ok("shared")));
        assert_eq!(logins.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_rejected_token_is_replaced_once_however_many_callers_saw_it_rejected() {
        let server = login_server(3600).await;
        let url = server.url();
        let cache = TokenCache::default();
        let transport = PlainTransport::default();
        let first = cache
            .token(&transport, credentials(&url), WAIT)
            .await
            .unwrap();
        let a = cache
            .refresh(&transport, credentials(&url), &first, WAIT)
            .await
            .unwrap();
        let b = cache
            .refresh(&transport, credentials(&url), &first, WAIT)
            .await
            .unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("token-2", "token-2"));
        assert_eq!(server.requests().len(), 2);
    }

    #[tokio::test]
    async fn other_credentials_get_their_own_token() {
        let server = login_server(3600).await;
        let url = server.url();
        let cache = TokenCache::default();
        let transport = PlainTransport::default();
        let other = Credentials {
            client_secret: "rotated",
            ..credentials(&url)
        };
        cache
            .token(&transport, credentials(&url), WAIT)
            .await
            .unwrap();
        assert_eq!(
            cache.token(&transport, other, WAIT).await.unwrap(),
            "token-2"
        );
    }

    #[tokio::test]
    async fn refused_credentials_fail_for_good_and_say_it_was_the_login() {
        let server =
            FakeServer::start(|_, _| (401, r#"{"error":"invalid_client"}"#.to_owned())).await;
        let url = server.url();
        let err = TokenCache::default()
            .token(&PlainTransport::default(), credentials(&url), WAIT)
            .await
            .unwrap_err();
        assert_eq!(err.http_status, 401);
        let failure = err.failure.unwrap();
        assert_eq!(failure.reason, "401 Unauthorized (Genesys login)");
        assert!(!failure.retryable);
    }

    #[tokio::test]
    async fn a_login_server_in_trouble_is_worth_another_try() {
        let server = FakeServer::start(|_, _| (503, String::new())).await;
        let url = server.url();
        let err = TokenCache::default()
            .token(&PlainTransport::default(), credentials(&url), WAIT)
            .await
            .unwrap_err();
        assert!(err.failure.unwrap().retryable);
    }

    #[tokio::test]
    async fn a_failed_login_is_not_cached() {
        let server = FakeServer::start(|_, n| {
            if n == 0 {
                (503, String::new())
            } else {
                (
                    200,
                    r#"{"access_token":"late","expires_in":3600}"#.to_owned(),
                )
            }
        })
        .await;
        let url = server.url();
        let cache = TokenCache::default();
        let transport = PlainTransport::default();
        assert!(
            cache
                .token(&transport, credentials(&url), WAIT)
                .await
                .is_err()
        );
        assert_eq!(
            cache
                .token(&transport, credentials(&url), WAIT)
                .await
                .unwrap(),
            "late"
        );
    }
}
