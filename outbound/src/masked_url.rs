//! A brand's URL as it may appear in an email or a log line. Brands put credentials in URLs
//! (`https://user:pass@crm.example/hook`, `...?token=...`): an email goes to several people and
//! a log to an operator's log store, neither of which should carry them. What stays is what a
//! person needs to recognise the endpoint: scheme, host, port, path and the query's keys.

/// `raw` with its userinfo replaced by `***` and every query value by `***`; the fragment
/// goes. A string that is not a URL is not shown at all.
pub fn masked_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "<not a URL>".to_owned();
    };
    if !url.username().is_empty() || url.password().is_some() {
        // Only fails for URLs that cannot have userinfo, which then have none.
        let _ = url.set_password(None);
        let _ = url.set_username("***");
    }
    if let Some(query) = url.query() {
        // On the raw query, so keys stay exactly as written; a segment without `=` may itself
        // be the secret (`?abc123`) and goes whole.
        let masked: Vec<String> = query
            .split('&')
            .map(|segment| match segment.split_once('=') {
                Some((key, _)) => format!("{key}=***"),
                None => "***".to_owned(),
            })
            .collect();
        url.set_query(Some(&masked.join("&")));
    }
    url.set_fragment(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_is_shown_as_it_is() {
        assert_eq!(
            masked_url("https://crm.brand.example/line"),
            "https://crm.brand.example/line"
        );
        assert_eq!(
            masked_url("http://10.0.0.7:8080/LineServer/index.html"),
            "http://10.0.0.7:8080/LineServer/index.html"
        );
    }

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(
            masked_url("https://bot:s3cret@crm.brand.example/line"),
            "https://***@crm.brand.example/line"
        );
        assert_eq!(
            masked_url("https://only-a-token@crm.brand.example/"),
            "https://***@crm.brand.example/"
        );
    }

    #[test]
    fn query_values_are_masked_and_their_keys_kept() {
        assert_eq!(
            masked_url("https://crm.brand.example/hook?token=abc123&tenant=42#top"),
            "https://crm.brand.example/hook?token=***&tenant=***"
        );
    }

    #[test]
    fn a_query_of_a_bare_value_is_masked_whole() {
        assert_eq!(
            masked_url("https://crm.brand.example/hook?abc123&key=v"),
            "https://crm.brand.example/hook?***&key=***"
        );
    }

    #[test]
    fn something_that_is_not_a_url_is_not_shown() {
        assert_eq!(masked_url("not a url with s3cret"), "<not a URL>");
    }
}
