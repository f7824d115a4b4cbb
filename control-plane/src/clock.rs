//! Instants as stored in records, and their conversions to and from protobuf.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An instant with protobuf's range and precision (seconds and nanoseconds since the Unix epoch),
/// so that a `valid_until` far in the future round-trips unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Time {
    pub seconds: i64,
    pub nanos: i32,
}

impl Time {
    pub fn now() -> Time {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        }
    }

    /// `None` when the timestamp is outside protobuf's valid range (years 1 to 9999).
    pub fn from_proto(ts: &prost_types::Timestamp) -> Option<Time> {
        // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the Timestamp spec's bounds.
        const MIN_SECONDS: i64 = -62_135_596_800;
        const MAX_SECONDS: i64 = 253_402_300_799;
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds)
            || !(0..1_000_000_000).contains(&ts.nanos)
        {
            return None;
        }
        Some(Time {
            seconds: ts.seconds,
            nanos: ts.nanos,
        })
    }

    pub fn to_proto(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.seconds,
            nanos: self.nanos,
        }
    }

    pub fn plus(self, d: Duration) -> Time {
        let nanos = i64::from(self.nanos) + i64::from(d.subsec_nanos());
        let seconds = self
            .seconds
            .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .saturating_add(nanos / 1_000_000_000);
        Time {
            seconds,
            nanos: i32::try_from(nanos % 1_000_000_000).unwrap_or(0),
        }
    }

    pub fn minus(self, d: Duration) -> Time {
        let mut seconds = self
            .seconds
            .saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut nanos = i64::from(self.nanos) - i64::from(d.subsec_nanos());
        if nanos < 0 {
            nanos += 1_000_000_000;
            seconds = seconds.saturating_sub(1);
        }
        Time {
            seconds,
            nanos: i32::try_from(nanos).unwrap_or(0),
        }
    }

    /// Microseconds since the epoch, clamped to zero for instants before it.
    pub fn unix_micros(self) -> u64 {
        let seconds = u64::try_from(self.seconds).unwrap_or(0);
        let micros = u64::try_from(self.nanos / 1_000).unwrap_or(0);
        if self.seconds < 0 {
            return 0;
        }
        seconds.saturating_mul(1_000_000).saturating_add(micros)
    }

    /// RFC 3339, for messages a person reads.
    pub fn rfc3339(self) -> String {
        match u64::try_from(self.seconds) {
            Ok(seconds) => {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds))
                    .to_string()
            }
            Err(_) => format!(
                "{} seconds before the Unix epoch",
                self.seconds.unsigned_abs()
            ),
        }
    }
}

/// Converts a protobuf duration; `None` when it is negative or malformed.
pub(crate) fn duration_from_proto(d: &prost_types::Duration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(d.seconds).ok()?,
        u32::try_from(d.nanos).ok()?,
    ))
}

pub(crate) fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_carries_nanoseconds_into_seconds() {
        let t = Time {
            seconds: 10,
            nanos: 900_000_000,
        };
        assert_eq!(
            t.plus(Duration::from_millis(200)),
            Time {
                seconds: 11,
                nanos: 100_000_000
            }
        );
    }

    #[test]
    fn minus_borrows_a_second_for_nanoseconds() {
        let t = Time {
            seconds: 10,
            nanos: 100_000_000,
        };
        assert_eq!(
            t.minus(Duration::from_millis(200)),
            Time {
                seconds: 9,
                nanos: 900_000_000
            }
        );
    }

    #[test]
    fn timestamps_outside_the_protobuf_range_are_rejected() {
        let ts = prost_types::Timestamp {
            seconds: 253_402_300_800,
            nanos: 0,
        };
        assert!(Time::from_proto(&ts).is_none());
    }

    #[test]
    fn negative_durations_are_rejected() {
        let d = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert!(duration_from_proto(&d).is_none());
    }
}
