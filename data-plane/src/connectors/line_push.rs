//! The LINE push API (PROTOCOLS.md §1): messages to a user outside any reply window, made
//! idempotent by `X-Line-Retry-Key` so a message is sent at most once however often it is tried.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::transport::{Post, Transport};
use crate::attempt::{AttemptResult, status_is_retryable};

pub const PUSH_PATH: &str = "/v2/bot/message/push";
pub const RETRY_KEY_HEADER: &str = "x-line-retry-key";
/// LINE takes 1 to 5 message objects per push.
pub const MAX_MESSAGES: usize = 5;

/// The `X-Line-Retry-Key` for a message that came from elsewhere: a name-based UUID (RFC 9562
/// version 8 over SHA-256, its appendix B.2) of where it came from and its id there. Every try of
/// that message, the sender's retries and ours, carries the same key, so LINE sends it once and
/// answers repeats with 409.
pub fn retry_key(origin: &str, message_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"hookplane line push retry key\n");
    hash.update(origin.as_bytes());
    hash.update(b"\n");
    hash.update(message_id.as_bytes());
    let mut bytes: [u8; 16] = hash.finalize()[..16].try_into().expect("16 of 32 bytes");
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[derive(Serialize)]
struct PushBody<'a> {
    to: &'a str,
    messages: &'a [Value],
}

/// The push request body for `to` (a userId, groupId or roomId); `messages` holds 1 to 5
/// message objects (`{"type":"text","text":...}`, `{"type":"image",...}`).
pub fn push_body(to: &str, messages: &[Value]) -> Bytes {
    let body = PushBody { to, messages };
    Bytes::from(serde_json::to_vec(&body).expect("JSON values always serialise"))
}

/// One push to make.
pub struct Push<'a> {
    /// `https://api.line.me` or a gateway standing in for it.
    pub base_url: &'a str,
    /// The channel access token; empty when the channel has none stored.
    pub access_token: &'a str,
    pub retry_key: &'a str,
    pub body: Bytes,
    pub timeout: Duration,
}

/// Sends one push. 2xx is delivered; 409 is too (LINE already accepted this retry key); 408,
/// 429, 5xx and no answer may pass on another try; any other answer will not.
pub async fn push(transport: &dyn Transport, push: Push<'_>) -> AttemptResult {
    if push.access_token.is_empty() {
        return AttemptResult::unusable("the channel has no LINE access token");
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (Ok(bearer), Ok(key)) = (
        HeaderValue::from_str(&format!("Bearer {}", push.access_token)),
        HeaderValue::from_str(push.retry_key),
    ) else {
        return AttemptResult::unusable("the channel's LINE access token is not a valid header");
    };
    headers.insert(header::AUTHORIZATION, bearer);
    headers.insert(RETRY_KEY_HEADER, key);
    let url = format!("{}{PUSH_PATH}", push.base_url.trim_end_matches('/'));
    let reply = match transport
        .post(Post {
            url,
            headers,
            body: push.body,
            timeout: push.timeout,
        })
        .await
    {
        Ok(reply) => reply,
        Err(unanswered) => return AttemptResult::unanswered(unanswered, ""),
    };
    match reply.status {
        200..=299 | 409 => AttemptResult::delivered(&reply),
        status => AttemptResult::refused(&reply, status_is_retryable(status), ""),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::connectors::fake_http::{FakeServer, PlainTransport};

    fn request<'a>(server: &'a str, token: &'a str, key: &'a str) -> Push<'a> {
        Push {
            base_url: server,
            access_token: token,
            retry_key: key,
            body: push_body("U1", &[json!({"type": "text", "text": "hello"})]),
            timeout: Duration::from_secs(5),
        }
    }

    async fn push_answered(status: u16) -> (AttemptResult, FakeServer) {
        let line = FakeServer::start(move |_, _| (status, "{}".to_owned())).await;
        let url = line.url();
        let result = push(&PlainTransport::default(), request(&url, "tok", "key")).await;
        (result, line)
    }

    #[test]
    fn the_retry_key_is_a_uuid_that_depends_only_on_origin_and_message() {
        let key = retry_key("fwd_1", "msg-1");
        assert_eq!(key, retry_key("fwd_1", "msg-1"));
        assert_ne!(key, retry_key("fwd_1", "msg-2"));
        assert_ne!(key, retry_key("fwd_2", "msg-1"));
        let groups: Vec<usize> = key.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(key.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_retry_key_carries_the_version_and_variant_of_rfc_9562() {
        let key = retry_key("fwd_1", "msg-1");
        assert_eq!(&key[14..15], "8");
        assert!(matches!(&key[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn the_push_body_names_the_recipient_and_the_messages() {
        let body = push_body("U1", &[json!({"type": "text", "text": "hi"})]);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            json!({"to": "U1", "messages": [{"type": "text", "text": "hi"}]})
        );
    }

    #[tokio::test]
    async fn a_push_posts_to_the_push_path_with_the_bearer_token_and_retry_key() {
        let (result, line) = push_answered(200).await;
        assert!(result.succeeded());
        let got = line.requests_to(PUSH_PATH);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header("authorization"), Some("Bearer tok"));
        assert_eq!(got[0].header("x-line-retry-key"), Some("key"));
        assert_eq!(got[0].header("content-type"), Some("application/json"));
        assert_eq!(got[0].json()["to"], "U1");
    }

    #[tokio::test]
    async fn a_trailing_slash_on_the_base_url_is_harmless() {
        let line = FakeServer::start(|_, _| (200, "{}".to_owned())).await;
        let base = format!("{}/", line.url());
        push(&PlainTransport::default(), request(&base, "tok", "key")).await;
        assert_eq!(line.requests_to(PUSH_PATH).len(), 1);
    }

    #[tokio::test]
    async fn a_409_means_line_already_accepted_the_retry_key() {
        let (result, _line) = push_answered(409).await;
        assert!(result.succeeded());
        assert_eq!(result.http_status, 409);
    }

    #[tokio::test]
    async fn a_429_or_5xx_is_worth_another_try() {
        for status in [429, 500, 503] {
            let (result, _line) = push_answered(status).await;
            assert!(result.failure.unwrap().retryable, "{status}");
        }
    }

    #[tokio::test]
    async fn another_4xx_fails_for_good() {
        let (result, _line) = push_answered(400).await;
        let failure = result.failure.unwrap();
        assert!(!failure.retryable);
        assert_eq!(failure.reason, "400 Bad Request");
    }

    #[tokio::test]
    async fn no_answer_is_worth_another_try() {
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let result = push(&PlainTransport::default(), request(&closed, "tok", "k")).await;
        let failure = result.failure.unwrap();
        assert!(failure.retryable);
        assert!(failure.reason.starts_with("remote network error"));
    }

    #[tokio::test]
    async fn a_channel_without_an_access_token_fails_for_good_without_a_request() {
        let line = FakeServer::start(|_, _| (200, "{}".to_owned())).await;
        let url = line.url();
        let result = push(&PlainTransport::default(), request(&url, "", "k")).await;
        assert!(!result.failure.unwrap().retryable);
        assert!(line.requests().is_empty());
    }
}
