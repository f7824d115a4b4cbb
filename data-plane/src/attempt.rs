//! How an attempt of any target ends: the answer (or its absence), and the [`AttemptResult`]
//! that retries, breakers, the attempt log and failure emails read alike. A leaf: it names
//! nothing else of the node, so transports, connectors and the engine all build on it.

use std::time::Duration;

use bytes::Bytes;
use hookplane_outbound::{
    failure::{Failure, status_reason},
    sender::Answer,
};

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

impl From<&Failure> for Unanswered {
    fn from(failure: &Failure) -> Self {
        Unanswered {
            reason: failure.to_string(),
            retryable: failure.is_retryable(),
        }
    }
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

    /// A request was not made; `failure` says why.
    pub fn not_sent(failure: &Failure) -> Self {
        Self::unanswered(Unanswered::from(failure), "")
    }

    /// What the sender's one request came to: 2xx is delivered, any other answer or none failed.
    pub fn from_send(sent: Result<Answer, Failure>) -> Self {
        match sent {
            Ok(answer) => {
                let failed = !(200..300).contains(&answer.status);
                let failure = failed.then(|| AttemptFailure {
                    reason: status_reason(answer.status),
                    retryable: status_is_retryable(answer.status),
                });
                Self {
                    http_status: answer.status,
                    response_body: answer.body_start,
                    failure,
                    retry_after: answer.retry_after,
                }
            }
            Err(failure) => Self::not_sent(&failure),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    /// Whether the attempt says the target is in trouble, for its breaker: a failure worth
    /// retrying is; a refusal by the guard or unusable settings say nothing of its health.
    pub fn target_is_unwell(&self) -> Option<bool> {
        match &self.failure {
            None => Some(false),
            Some(f) if f.retryable => Some(true),
            Some(_) if self.http_status != 0 => Some(false),
            Some(_) => None,
        }
    }
}

/// Whether a status is worth another try (408, 429, 5xx): the rule of every delivery.
pub fn status_is_retryable(status: u16) -> bool {
    Failure::Status(status).is_retryable()
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
        let r = AttemptResult::refused(&reply(530), true, "");
        assert_eq!(r.failure.unwrap().reason, "530");
    }

    #[test]
    fn a_refused_target_is_not_worth_another_try() {
        let unanswered = Unanswered::from(&Failure::InvalidUrl);
        assert_eq!(unanswered.reason, "invalid target URL");
        assert!(!unanswered.retryable);
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
    fn a_sent_request_answered_2xx_is_delivered() {
        let sent = AttemptResult::from_send(Ok(Answer {
            status: 204,
            body_start: String::new(),
            retry_after: None,
        }));
        assert!(sent.succeeded());
        assert_eq!(sent.target_is_unwell(), Some(false));
    }

    #[test]
    fn a_sent_request_answered_503_is_retryable_and_unwell() {
        let sent = AttemptResult::from_send(Ok(Answer {
            status: 503,
            body_start: "busy".to_owned(),
            retry_after: Some(Duration::from_secs(3)),
        }));
        assert_eq!(
            sent.failure.as_ref().unwrap().reason,
            "503 Service Unavailable"
        );
        assert_eq!(sent.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(sent.target_is_unwell(), Some(true));
    }

    #[test]
    fn a_request_never_made_says_nothing_of_the_targets_health() {
        let sent = AttemptResult::from_send(Err(Failure::InvalidUrl));
        assert_eq!(sent.target_is_unwell(), None);
        let unusable = AttemptResult::unusable("no settings");
        assert_eq!(unusable.target_is_unwell(), None);
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
