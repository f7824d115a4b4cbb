//! `Retry-After` as a target sends it on 429 and 503.

use std::time::{Duration, SystemTime};

/// Parses a Retry-After value: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn retry_after_in_seconds_is_read() {
        assert_eq!(
            parse_retry_after(" 120 ", SystemTime::now()),
            Some(secs(120))
        );
    }

    #[test]
    fn retry_after_as_an_http_date_is_read() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_garbled_retry_after_is_ignored() {
        assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
    }
}
