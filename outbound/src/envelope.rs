//! The body of an event webhook (PROTOCOLS.md §2): `{"timestamp","topic","data"}` in that order,
//! serialised once. Those bytes are what is signed and sent on every attempt, so nothing after
//! this point may parse and re-encode them.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Serialize)]
struct Wire<'a> {
    timestamp: String,
    topic: &'a str,
    data: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "is_false")]
    test: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The body of a published event of `topic` that happened `at`.
pub fn event_body(at: SystemTime, topic: &str, data: &Map<String, Value>) -> Bytes {
    encode(&Wire {
        timestamp: rfc3339(at),
        topic,
        data,
        test: false,
    })
}

/// The body of a test event: the same envelope with `"test": true` at the top level, so a
/// receiver can tell a "Send test" from real traffic without looking into `data`.
pub fn test_event_body(at: SystemTime, topic: &str, data: &Map<String, Value>) -> Bytes {
    encode(&Wire {
        timestamp: rfc3339(at),
        topic,
        data,
        test: true,
    })
}

fn encode(wire: &Wire<'_>) -> Bytes {
    // Strings and a JSON map with string keys: serialising cannot fail.
    Bytes::from(serde_json::to_vec(wire).unwrap_or_default())
}

/// RFC 3339 in UTC with milliseconds and a numeric offset: `2025-01-01T08:00:00.000+00:00`.
pub fn rfc3339(at: SystemTime) -> String {
    let zulu = humantime::format_rfc3339_millis(at).to_string();
    match zulu.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => zulu,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_735_689_600_123)
    }

    fn data() -> Map<String, Value> {
        json!({"line_uid": "U1", "points_count": 5})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn the_envelope_has_timestamp_topic_and_data_in_that_order() {
        let body = event_body(at(), "prize.points_added", &data());
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"timestamp":"2025-01-01T00:00:00.123+00:00","topic":"prize.points_added","data":{"line_uid":"U1","points_count":5}}"#
        );
    }

    #[test]
    fn a_test_event_says_so_at_the_top_level() {
        let body = test_event_body(at(), "prize.points_added", &data());
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["test"], json!(true));
        assert_eq!(parsed["topic"], json!("prize.points_added"));
    }

    #[test]
    fn a_real_event_carries_no_test_field() {
        let body = event_body(at(), "prize.points_added", &data());
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert!(parsed.get("test").is_none());
    }

    #[test]
    fn the_timestamp_has_a_numeric_offset() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000+00:00");
    }
}
