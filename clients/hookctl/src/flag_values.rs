//! Parsers for flag values that clap cannot read on its own: durations, instants, `k=v` pairs
//! and zone entitlements.

use std::collections::HashMap;

use hookplane_client::v1::{Zone, ZoneEntitlement};

/// `1h`, `90s`, `1h 30m` (humantime) as a protobuf duration.
pub fn duration(s: &str) -> Result<prost_types::Duration, String> {
    let parsed = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; expected a duration such as 30s, 10m or 1h"))?;
    prost_types::Duration::try_from(parsed).map_err(|_| "duration is too long".to_owned())
}

/// An RFC 3339 instant such as `2027-12-31T00:00:00Z`; a bare date means its midnight UTC.
pub fn timestamp(s: &str) -> Result<prost_types::Timestamp, String> {
    let s = s.trim();
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    if let Ok(time) = humantime::parse_rfc3339(&full) {
        return Ok(time.into());
    }
    // humantime knows only UTC `Z`; prost also reads numeric offsets such as `+08:00`.
    full.parse().map_err(|_| {
        format!("{s:?} is not an RFC 3339 instant; expected such as 2027-12-31T00:00:00Z")
    })
}

/// `key=value`; the value may be empty and may itself hold `=`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

pub fn key_values(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

/// `ZONE_1=2027-12-31T00:00:00Z`; the zone may also be written `zone_1` or `1`.
pub fn zone_entitlement(s: &str) -> Result<ZoneEntitlement, String> {
    let (zone, until) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ZONE=INSTANT, such as ZONE_1=2027-12-31T00:00:00Z"))?;
    Ok(ZoneEntitlement {
        zone: zone_name(zone)? as i32,
        valid_until: Some(timestamp(until)?),
    })
}

fn zone_name(s: &str) -> Result<Zone, String> {
    let upper = s.trim().to_ascii_uppercase();
    let zone = match upper.parse::<i32>() {
        Ok(number) => Zone::try_from(number).ok(),
        Err(_) => Zone::from_str_name(&upper),
    };
    match zone {
        Some(zone) if zone != Zone::Unspecified => Ok(zone),
        _ => Err(format!("unknown zone {s:?}; expected ZONE_1 or ZONE_2")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_reads_humantime_units() {
        let d = duration("1h 30m").unwrap();
        assert_eq!((d.seconds, d.nanos), (5400, 0));
    }

    #[test]
    fn duration_keeps_milliseconds() {
        let d = duration("1500ms").unwrap();
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
    }

    #[test]
    fn duration_without_a_unit_is_refused() {
        assert!(duration("10").is_err());
    }

    #[test]
    fn timestamp_reads_rfc3339_utc() {
        let t = timestamp("2027-12-31T00:00:00Z").unwrap();
        assert_eq!((t.seconds, t.nanos), (1_830_211_200, 0));
    }

    #[test]
    fn timestamp_reads_a_bare_date_as_midnight_utc() {
        assert_eq!(
            timestamp("2027-12-31").unwrap(),
            timestamp("2027-12-31T00:00:00Z").unwrap()
        );
    }

    #[test]
    fn timestamp_reads_a_numeric_offset() {
        let t = timestamp("2027-12-31T08:00:00+08:00").unwrap();
        assert_eq!(t, timestamp("2027-12-31T00:00:00Z").unwrap());
    }

    #[test]
    fn timestamp_refuses_other_formats() {
        assert!(timestamp("31/12/2027").is_err());
    }

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(
            key_value("query=a=b").unwrap(),
            ("query".to_owned(), "a=b".to_owned())
        );
    }

    #[test]
    fn key_value_allows_an_empty_value() {
        assert_eq!(key_value("k=").unwrap(), ("k".to_owned(), String::new()));
    }

    #[test]
    fn key_value_refuses_a_missing_key() {
        assert!(key_value("=v").is_err());
        assert!(key_value("novalue").is_err());
    }

    #[test]
    fn zone_entitlement_reads_zone_and_instant() {
        let z = zone_entitlement("ZONE_2=2027-12-31T00:00:00Z").unwrap();
        assert_eq!(z.zone, Zone::Zone2 as i32);
        assert_eq!(z.valid_until.unwrap().seconds, 1_830_211_200);
    }

    #[test]
    fn zone_entitlement_accepts_lowercase_and_numbers() {
        assert_eq!(zone_entitlement("zone_1=2027-01-01").unwrap().zone, 1);
        assert_eq!(zone_entitlement("2=2027-01-01").unwrap().zone, 2);
    }

    #[test]
    fn zone_entitlement_refuses_unknown_zones() {
        assert!(zone_entitlement("ZONE_3=2027-01-01").is_err());
        assert!(zone_entitlement("ZONE_UNSPECIFIED=2027-01-01").is_err());
        assert!(zone_entitlement("0=2027-01-01").is_err());
    }
}
