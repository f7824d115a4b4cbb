//! Why an attempt failed, put the way a person reads it (PROTOCOLS.md §5), and whether it is
//! worth another try.

use std::{error::Error as StdError, fmt, io};

use crate::{Error, ssrf::Refusal};

/// The cause of a failed attempt when no HTTP answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkCause {
    ConnectionRefused,
    ConnectionReset,
    Timeout,
    Dns,
    Tls,
}

impl NetworkCause {
    fn described(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection refused",
            Self::ConnectionReset => "connection reset",
            Self::Timeout => "timeout",
            Self::Dns => "dns",
            Self::Tls => "tls",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A non-2xx answer.
    Status(u16),
    /// No HTTP answer.
    Network(Option<NetworkCause>),
    /// The SSRF guard turned the target down.
    Refused(Refusal),
    /// The target's URL cannot be used.
    InvalidUrl,
    /// The request was not sent; the text says why (a forwarding set switched off, a subscription
    /// stopped, no usable share secret).
    NotSent(&'static str),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => f.write_str(&status_reason(*code)),
            Self::Network(None) => f.write_str("remote network error"),
            Self::Network(Some(cause)) => write!(f, "remote network error: {}", cause.described()),
            Self::Refused(refusal) => refusal.fmt(f),
            Self::InvalidUrl => f.write_str("invalid target URL"),
            Self::NotSent(why) => f.write_str(why),
        }
    }
}

impl Failure {
    /// 408, 429, 5xx and network errors may pass; other answers (410 Gone among them) and
    /// refusals will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status(code) => matches!(code, 408 | 429 | 500..=599),
            Self::Network(_) => true,
            Self::Refused(_) | Self::InvalidUrl | Self::NotSent(_) => false,
        }
    }

    /// Whether the failure says the target is in trouble (for its circuit breaker): exactly the
    /// failures worth retrying. A 4xx other than 408/429 comes from a live server.
    pub fn target_is_unwell(&self) -> bool {
        self.is_retryable()
    }

    /// Classifies an error of the delivery HTTP client by its chain of sources: the guard's
    /// refusal from the resolver, an I/O error's kind, or the words of a hyper or rustls error.
    pub fn from_http_error(err: &(dyn StdError + 'static)) -> Self {
        let mut source = Some(err);
        let mut cause = None;
        while let Some(e) = source {
            if let Some(Error::TargetRefused(refusal)) = e.downcast_ref::<Error>() {
                return Self::Refused(refusal.clone());
            }
            cause = cause.or_else(|| cause_of(e));
            source = e.source();
        }
        Self::Network(cause)
    }
}

fn cause_of(e: &(dyn StdError + 'static)) -> Option<NetworkCause> {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        match io.kind() {
            io::ErrorKind::ConnectionRefused => return Some(NetworkCause::ConnectionRefused),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => return Some(NetworkCause::ConnectionReset),
            io::ErrorKind::TimedOut => return Some(NetworkCause::Timeout),
            _ => {}
        }
    }
    // hyper and rustls errors are opaque types here; their messages are stable enough to tell
    // the common cases apart, and a wrong guess only changes the reason's last words.
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("dns error") || text.contains("failed to lookup address") {
        Some(NetworkCause::Dns)
    } else if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
        Some(NetworkCause::Tls)
    } else if text.contains("connection closed") || text.contains("connection reset") {
        Some(NetworkCause::ConnectionReset)
    } else {
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_with_their_reason_phrase() {
        assert_eq!(Failure::Status(400).to_string(), "400 Bad Request");
        assert_eq!(Failure::Status(401).to_string(), "401 Unauthorized");
        assert_eq!(Failure::Status(403).to_string(), "403 Forbidden");
        assert_eq!(Failure::Status(404).to_string(), "404 Not Found");
        assert_eq!(Failure::Status(405).to_string(), "405 Method Not Allowed");
        assert_eq!(
            Failure::Status(500).to_string(),
            "500 Internal Server Error"
        );
        assert_eq!(Failure::Status(502).to_string(), "502 Bad Gateway");
    }

    #[test]
    fn a_status_without_a_standard_phrase_is_the_bare_code() {
        assert_eq!(Failure::Status(530).to_string(), "530");
    }

    #[test]
    fn network_failures_start_with_remote_network_error() {
        assert_eq!(Failure::Network(None).to_string(), "remote network error");
        assert_eq!(
            Failure::Network(Some(NetworkCause::ConnectionRefused)).to_string(),
            "remote network error: connection refused"
        );
        assert_eq!(
            Failure::Network(Some(NetworkCause::Timeout)).to_string(),
            "remote network error: timeout"
        );
    }

    #[test]
    fn timeouts_throttling_and_server_errors_are_retried() {
        for code in [408, 429, 500, 502, 503, 504, 530] {
            assert!(Failure::Status(code).is_retryable(), "{code}");
        }
        assert!(Failure::Network(None).is_retryable());
    }

    #[test]
    fn other_client_errors_redirects_and_refusals_fail_for_good() {
        for code in [301, 302, 400, 401, 403, 404, 410] {
            assert!(!Failure::Status(code).is_retryable(), "{code}");
        }
        let refusal = crate::ssrf::TargetGuard::default()
            .check("10.0.0.1".parse().unwrap())
            .unwrap_err();
        assert!(!Failure::Refused(refusal).is_retryable());
    }

    #[test]
    fn gone_fails_for_good() {
        assert_eq!(Failure::Status(410).to_string(), "410 Gone");
        assert!(!Failure::Status(410).is_retryable());
    }

    #[test]
    fn a_request_not_sent_reads_as_its_reason_and_is_not_retried() {
        let failure = Failure::NotSent("subscription stopped");
        assert_eq!(failure.to_string(), "subscription stopped");
        assert!(!failure.is_retryable());
        assert!(!failure.target_is_unwell());
    }

    #[test]
    fn a_client_error_does_not_count_against_the_target() {
        assert!(!Failure::Status(404).target_is_unwell());
        assert!(Failure::Status(503).target_is_unwell());
        assert!(Failure::Network(None).target_is_unwell());
    }
}
