//! Customer to agent: one translated LINE message posted to the Open Messaging inbound API,
//! with the cached token, and a fresh one once if Genesys turns the cached one down.

use std::time::Duration;

use bytes::Bytes;
use hookplane_proto::v1::GenesysSettings;
use http::{HeaderMap, HeaderValue, header};

use super::oauth::{Credentials, TokenCache};
use crate::{
    attempt::{AttemptResult, Reply, status_is_retryable},
    connectors::transport::{Post, Transport},
};

/// `{api}/api/v2/conversations/messages/{integrationId}/inbound/open/message`, the integration id
/// escaped as one path segment.
pub fn inbound_url(api_base_url: &str, integration_id: &str) -> Option<String> {
    let mut url = url::Url::parse(api_base_url).ok()?;
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(["api", "v2", "conversations", "messages", integration_id])
        .extend(["inbound", "open", "message"]);
    Some(url.into())
}

/// Posts one Open Messaging inbound body (from [`super::mapping::translate`]).
pub async fn send_inbound(
    transport: &dyn Transport,
    tokens: &TokenCache,
    settings: &GenesysSettings,
    body: Bytes,
    timeout: Duration,
) -> AttemptResult {
    if settings.integration_id.is_empty() || settings.client_id.is_empty() {
        return AttemptResult::unusable("the Genesys settings lack a client id or integration id");
    }
    let Some(url) = inbound_url(&settings.api_base_url, &settings.integration_id) else {
        return AttemptResult::unusable("invalid Genesys API base URL");
    };
    let credentials = Credentials {
        login_base_url: &settings.login_base_url,
        client_id: &settings.client_id,
        client_secret: &settings.client_secret,
    };
    let token = match tokens.token(transport, credentials, timeout).await {
        Ok(token) => token,
        Err(failed) => return failed,
    };
    let reply = match post(transport, &url, &token, body.clone(), timeout).await {
        Ok(reply) if reply.status == 401 => {
            // Revoked or expired early: one fresh token, one more try, never a loop.
            let token = match tokens
                .refresh(transport, credentials, &token, timeout)
                .await
            {
                Ok(token) => token,
                Err(failed) => return failed,
            };
            post(transport, &url, &token, body, timeout).await
        }
        other => other,
    };
    match reply {
        Ok(reply) if (200..300).contains(&reply.status) => AttemptResult::delivered(&reply),
        Ok(reply) => AttemptResult::refused(&reply, status_is_retryable(reply.status), ""),
        Err(unanswered) => AttemptResult::unanswered(unanswered, ""),
    }
}

async fn post(
    transport: &dyn Transport,
    url: &str,
    token: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, crate::attempt::Unanswered> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, bearer);
    }
    transport
        .post(Post {
            url: url.to_owned(),
            headers,
            body,
            timeout,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::{
        fake_http::{FakeServer, PlainTransport},
        genesys::oauth::TOKEN_PATH,
    };

    const WAIT: Duration = Duration::from_secs(5);
    const INBOUND: &str = "/api/v2/conversations/messages/int-1/inbound/open/message";

    /// A fake Genesys: tokens `token-N` from the login path; the inbound path answers
    /// `inbound(authorization, n)`.
    async fn genesys(inbound: impl Fn(&str, usize) -> u16 + Send + Sync + 'static) -> FakeServer {
        let logins = std::sync::atomic::AtomicUsize::new(0);
        let messages = std::sync::atomic::AtomicUsize::new(0);
        FakeServer::start(move |request, _| {
            if request.path == TOKEN_PATH {
                let n = logins.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                (
                    200,
                    format!(r#"{{"access_token":"token-{n}","expires_in":86399}}"#),
                )
            } else {
                let n = messages.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let status = inbound(request.header("authorization").unwrap_or(""), n);
                (status, r#"{"id":"gen-1"}"#.to_owned())
            }
        })
        .await
    }

    fn settings(url: &str) -> GenesysSettings {
        GenesysSettings {
            login_base_url: url.to_owned(),
            api_base_url: url.to_owned(),
            client_id: "client".to_owned(),
            client_secret: "secret".to_owned(),
            integration_id: "int-1".to_owned(),
            ..GenesysSettings::default()
        }
    }

    async fn send(server: &FakeServer, tokens: &TokenCache) -> AttemptResult {
        send_inbound(
            &PlainTransport::default(),
            tokens,
            &settings(&server.url()),
            Bytes::from_static(br#"{"text":"hi"}"#),
            WAIT,
        )
        .await
    }

    #[test]
    fn the_inbound_url_escapes_the_integration_id_and_keeps_a_base_path() {
        assert_eq!(
            inbound_url("https://api.mypurecloud.com", "a/b").unwrap(),
            "https://api.mypurecloud.com/api/v2/conversations/messages/a%2Fb/inbound/open/message"
        );
        assert_eq!(
            inbound_url("https://gw.example/genesys/", "i").unwrap(),
            "https://gw.example/genesys/api/v2/conversations/messages/i/inbound/open/message"
        );
    }

    #[tokio::test]
    async fn a_message_is_posted_with_the_bearer_token_and_its_exact_body() {
        let server = genesys(|_, _| 200).await;
        let result = send(&server, &TokenCache::default()).await;
        assert!(result.succeeded(), "{result:?}");
        let got = server.requests_to(INBOUND);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header("authorization"), Some("Bearer token-1"));
        assert_eq!(got[0].header("content-type"), Some("application/json"));
        assert_eq!(&got[0].body[..], br#"{"text":"hi"}"#);
    }

    #[tokio::test]
    async fn several_messages_share_one_login() {
        let server = genesys(|_, _| 200).await;
        let tokens = TokenCache::default();
        for _ in 0..3 {
            assert!(send(&server, &tokens).await.succeeded());
        }
        assert_eq!(server.requests_to(TOKEN_PATH).len(), 1);
        assert_eq!(server.requests_to(INBOUND).len(), 3);
    }

    #[tokio::test]
    async fn a_401_gets_one_fresh_token_and_one_more_try() {
        let server = genesys(|auth, _| if auth == "Bearer token-1" { 401 } else { 200 }).await;
        let result = send(&server, &TokenCache::default()).await;
        assert!(result.succeeded(), "{result:?}");
        assert_eq!(server.requests_to(TOKEN_PATH).len(), 2);
        let auths: Vec<String> = server
            .requests_to(INBOUND)
            .iter()
            .map(|r| r.header("authorization").unwrap().to_owned())
            .collect();
        assert_eq!(auths, ["Bearer token-1", "Bearer token-2"]);
    }

    #[tokio::test]
    async fn a_second_401_is_the_attempts_failure_without_a_loop() {
        let server = genesys(|_, _| 401).await;
        let result = send(&server, &TokenCache::default()).await;
        let failure = result.failure.unwrap();
        assert_eq!(failure.reason, "401 Unauthorized");
        assert!(!failure.retryable);
        assert_eq!(server.requests_to(TOKEN_PATH).len(), 2);
        assert_eq!(server.requests_to(INBOUND).len(), 2);
    }

    #[tokio::test]
    async fn a_5xx_or_429_from_genesys_is_worth_another_try() {
        for status in [429, 502] {
            let server = genesys(move |_, _| status).await;
            let result = send(&server, &TokenCache::default()).await;
            assert_eq!(result.http_status, status);
            assert!(result.failure.unwrap().retryable, "{status}");
        }
    }

    #[tokio::test]
    async fn a_400_from_genesys_fails_for_good() {
        let server = genesys(|_, _| 400).await;
        let result = send(&server, &TokenCache::default()).await;
        let failure = result.failure.unwrap();
        assert_eq!(failure.reason, "400 Bad Request");
        assert!(!failure.retryable);
    }

    #[tokio::test]
    async fn a_failed_login_is_the_attempts_failure_and_nothing_is_posted() {
        let server = FakeServer::start(|_, _| (401, String::new())).await;
        let result = send(&server, &TokenCache::default()).await;
        assert_eq!(
            result.failure.unwrap().reason,
            "401 Unauthorized (Genesys login)"
        );
        assert!(server.requests_to(INBOUND).is_empty());
    }
}
