//! The one HTTP operation connectors need (a POST) and how a connector's attempt ends.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderMap;

/// One POST to make.
#[derive(Debug, Clone)]
pub struct Post {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
}

/// What the server answered, whatever the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The answer's body, possibly cut short by the transport.
    pub body: Bytes,
    pub retry_after: Option<Duration>,
}

/// No HTTP answer: refused by the SSRF guard, unusable URL, or a network error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    /// As a person reads it (`remote network error: timeout`, `refused: ...`).
    pub reason: String,
    /// Whether another try might get an answer.
    pub retryable: bool,
}

/// Sends POSTs; the node implements it with its guarded sender.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn post(&self, post: Post) -> Result<Reply, Unanswered>;
}

/// How much of an answer's body the attempt log keeps.
const BODY_KEPT: usize = 1024;

/// How one connector attempt ended, for the attempt log and the retry decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// The last HTTP status seen; 0 when no answer came.
    pub http_status: u16,
    /// The start of the last answer's body.
    pub response_body: String,
    /// `None` when the attempt succeeded.
    pub failure: Option<AttemptFailure>,
    pub retry_after: Option<Duration>,
}

/// Why an attempt failed, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    pub reason: String,
    pub retryable: bool,
}

impl AttemptResult {
    /// An answer that counts as delivered.
    pub fn delivered(reply: &Reply) -> Self {
        Self {
            http_status: reply.status,
            response_body: body_start(&reply.body),
            failure: None,
            retry_after: None,
        }
    }

    /// An answer that does not count as delivered; `context` says which call it answered when
    /// the attempt made several (e.g. ` (Genesys login)`), and follows the status so reasons
    /// still start the way people read them (`401 Unauthorized`).
    pub fn refused(reply: &Reply, retryable: bool, context: &str) -> Self {
        Self {
            http_status: reply.status,
            response_body: body_start(&reply.body),
            failure: Some(AttemptFailure {
                reason: format!("{}{context}", status_reason(reply.status)),
                retryable,
            }),
            retry_after: reply.retry_after,
        }
    }

    /// No answer came.
    pub fn unanswered(err: Unanswered, context: &str) -> Self {
        Self {
            http_status: 0,
            response_body: String::new(),
            failure: Some(AttemptFailure {
                reason: format!("{}{context}", err.reason),
                retryable: err.retryable,
            }),
            retry_after: None,
        }
    }

    /// Failed before any request could be made (missing settings): not worth retrying.
    pub fn unusable(reason: impl Into<String>) -> Self {
        Self {
            http_status: 0,
            response_body: String::new(),
            failure: Some(AttemptFailure {
                reason: reason.into(),
                retryable: false,
            }),
            retry_after: None,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }
}

/// Whether a status is worth another try: 408, 429 and 5xx.
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// `404 Not Found`; a bare `530` when the code has no standard phrase.
pub fn status_reason(code: u16) -> String {
    match http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(phrase) => format!("{code} {phrase}"),
        None => code.to_string(),
    }
}

fn body_start(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(BODY_KEPT)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16) -> Reply {
        Reply {
            status,
            body: Bytes::from_static(b"{}"),
            retry_after: None,
        }
    }

    #[test]
    fn a_refusal_reads_as_the_status_then_the_call() {
        let r = AttemptResult::refused(&reply(401), false, " (Genesys login)");
        assert_eq!(
            r.failure.unwrap().reason,
            "401 Unauthorized (Genesys login)"
        );
    }

    #[test]
    fn a_code_without_a_phrase_stays_bare() {
        assert_eq!(status_reason(530), "530");
    }

    #[test]
    fn only_408_429_and_5xx_are_retryable() {
        for code in [408, 429, 500, 503, 599] {
            assert!(status_is_retryable(code), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 302] {
            assert!(!status_is_retryable(code), "{code}");
        }
    }

    #[test]
    fn the_kept_body_is_bounded() {
        let long = Reply {
            status: 500,
            body: Bytes::from(vec![b'x'; 5000]),
            retry_after: None,
        };
        assert_eq!(AttemptResult::delivered(&long).response_body.len(), 1024);
    }
}
