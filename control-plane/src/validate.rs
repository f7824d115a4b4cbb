//! Field checks shared by the admin services; each error names the field it is about.

use std::time::Duration;

use crate::clock::duration_from_proto;
use crate::error::Error;

const MAX_NAME_CHARS: usize = 200;
const MAX_URL_CHARS: usize = 2048;
const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Ids name resources in requests; an empty one is always a mistake.
pub(crate) fn id<'a>(field: &str, value: &'a str) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "required"));
    }
    Ok(value)
}

/// A request's resource message, which every create and update needs.
pub(crate) fn present<'a, T>(field: &str, value: Option<&'a T>) -> Result<&'a T, Error> {
    value.ok_or_else(|| Error::invalid(field, "required"))
}

/// A display name: non-empty (not only blanks) and at most 200 characters.
pub(crate) fn name(field: &str, value: &str) -> Result<String, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// An absolute http or https URL with a host, at most 2048 characters.
pub(crate) fn http_url(field: &str, value: &str) -> Result<String, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_URL_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_URL_CHARS} characters"),
        ));
    }
    let parsed = url::Url::parse(value)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()));
    match parsed {
        Some(_) => Ok(value.to_owned()),
        None => Err(Error::invalid(field, "must be an http or https URL")),
    }
}

pub(crate) fn email(field: &str, value: &str) -> Result<String, Error> {
    if email_address::EmailAddress::is_valid(value) {
        Ok(value.to_owned())
    } else {
        Err(Error::invalid(
            field,
            format!("{value:?} is not an email address"),
        ))
    }
}

/// A secret or credential: non-empty and at most `max_chars`. The value never enters a message.
pub(crate) fn secret(field: &str, value: &str, max_chars: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(Error::invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(())
}

/// A non-empty plain value (ids of other systems, region domains), at most `max_chars`.
pub(crate) fn required_text(field: &str, value: &str, max_chars: usize) -> Result<String, Error> {
    secret(field, value, max_chars)?;
    Ok(value.to_owned())
}

/// How long an old secret keeps working after a rotation: unset means zero, at most 7 days.
pub(crate) fn grace_period(
    field: &str,
    value: Option<&prost_types::Duration>,
) -> Result<Duration, Error> {
    let Some(value) = value else {
        return Ok(Duration::ZERO);
    };
    match duration_from_proto(value) {
        Some(d) if d <= MAX_GRACE => Ok(d),
        _ => Err(Error::invalid(field, "must be between 0s and 7 days")),
    }
}

/// A forward's per-attempt timeout: unset means 10 s, else 1 s to 60 s.
pub(crate) fn forward_timeout(
    field: &str,
    value: Option<&prost_types::Duration>,
) -> Result<Duration, Error> {
    let Some(value) = value else {
        return Ok(Duration::from_secs(10));
    };
    match duration_from_proto(value) {
        Some(d) if (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&d) => Ok(d),
        _ => Err(Error::invalid(field, "must be between 1s and 60s")),
    }
}

/// The paths an update applies. An empty mask means the fields `set` reports as present in the
/// given resource; a path outside `known` is an error naming it.
pub(crate) fn update_paths(
    mask: Option<&prost_types::FieldMask>,
    known: &[&str],
    set: impl FnOnce() -> Vec<&'static str>,
) -> Result<Vec<String>, Error> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Ok(set().into_iter().map(str::to_owned).collect());
    }
    for (i, path) in paths.iter().enumerate() {
        if !known.contains(&path.as_str()) {
            return Err(Error::invalid(
                format!("update_mask.paths[{i}]"),
                format!("unknown path {path:?} (known: {})", known.join(", ")),
            ));
        }
    }
    Ok(paths.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_name_is_rejected_naming_the_field() {
        let err = name("tenant.display_name", "  ").unwrap_err();
        assert_eq!(err.to_string(), "tenant.display_name: must not be empty");
    }

    #[test]
    fn a_name_of_201_characters_is_rejected() {
        let err = name("tenant.display_name", &"x".repeat(201)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tenant.display_name: must be at most 200 characters"
        );
    }

    #[test]
    fn a_name_of_200_multibyte_characters_is_accepted() {
        assert!(name("n", &"é".repeat(200)).is_ok());
    }

    #[test]
    fn an_ftp_url_is_rejected() {
        let err = http_url("forwarding_set.url", "ftp://example.com/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "forwarding_set.url: must be an http or https URL"
        );
    }

    #[test]
    fn a_url_without_host_is_rejected() {
        assert!(http_url("u", "http://").is_err());
    }

    #[test]
    fn a_url_longer_than_2048_characters_is_rejected() {
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(http_url("u", &long).is_err());
    }

    #[test]
    fn an_https_url_is_accepted() {
        assert!(http_url("u", "https://crm.example.com/line?x=1").is_ok());
    }

    #[test]
    fn a_malformed_email_is_quoted_in_the_message() {
        let err = email("tenant.notification_emails[1]", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "tenant.notification_emails[1]: \"x\" is not an email address"
        );
    }

    #[test]
    fn an_unset_grace_period_is_zero() {
        assert_eq!(grace_period("grace_period", None).unwrap(), Duration::ZERO);
    }

    #[test]
    fn a_grace_period_over_seven_days_is_rejected() {
        let d = prost_types::Duration {
            seconds: 7 * 24 * 3600 + 1,
            nanos: 0,
        };
        assert!(grace_period("grace_period", Some(&d)).is_err());
    }

    #[test]
    fn an_unset_timeout_is_ten_seconds() {
        assert_eq!(forward_timeout("t", None).unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn a_timeout_under_one_second_is_rejected() {
        let d = prost_types::Duration {
            seconds: 0,
            nanos: 500_000_000,
        };
        let err = forward_timeout("forwarding_set.timeout", Some(&d)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "forwarding_set.timeout: must be between 1s and 60s"
        );
    }

    #[test]
    fn an_unknown_update_path_is_named() {
        let mask = prost_types::FieldMask {
            paths: vec!["display_name".into(), "colour".into()],
        };
        let err = update_paths(Some(&mask), &["display_name"], Vec::new).unwrap_err();
        assert_eq!(
            err.to_string(),
            "update_mask.paths[1]: unknown path \"colour\" (known: display_name)"
        );
    }

    #[test]
    fn an_empty_mask_means_the_fields_that_are_set() {
        let paths = update_paths(None, &["a", "b"], || vec!["b"]).unwrap();
        assert_eq!(paths, ["b"]);
    }
}
