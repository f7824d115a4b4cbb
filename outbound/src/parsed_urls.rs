//! Target URLs parsed once. A node sends to the same few hundred URLs all day, and parsing one
//! (its host through IDNA included) cost more than the rest of building the request: the
//! profile of a saturated node put it at about 6% of the delivery threads.

use std::sync::{Arc, PoisonError, RwLock};

use foldhash::HashMap;
use http::HeaderValue;
use url::Url;

/// One target URL, as the guard reads it and as the request carries it.
pub(crate) struct ParsedUrl {
    pub url: Url,
    pub uri: http::Uri,
    /// Its `Host` header, as hyper's client would make it for each request: formatting it per
    /// request (`format!` of host and port, then a header value) was about 1.8 % of a drain's
    /// samples (docs/BENCHMARKS.md, change 39).
    pub host: HeaderValue,
}

/// The `Host` header of `url`: its host, and its port unless the scheme's default, as hyper's
/// client writes it when a request has none. `Url` already leaves a default port out.
fn host_header(url: &Url) -> Option<HeaderValue> {
    let host = url.host_str()?;
    match url.port() {
        Some(port) => HeaderValue::try_from(format!("{host}:{port}")),
        None => HeaderValue::from_str(host),
    }
    .ok()
}

/// More distinct URLs than any node's configuration holds; past it the cache starts over, so
/// URLs from configurations long gone cannot make it grow without bound.
const MAX_URLS: usize = 4096;

#[derive(Default)]
pub(crate) struct ParsedUrls {
    urls: RwLock<HashMap<String, Arc<ParsedUrl>>>,
}

impl ParsedUrls {
    /// The parsed `raw`, if it is an http or https URL with a host.
    pub fn get(&self, raw: &str) -> Option<Arc<ParsedUrl>> {
        let cached = self
            .urls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(raw)
            .cloned();
        if cached.is_some() {
            return cached;
        }
        let url = Url::parse(raw).ok()?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return None;
        }
        let uri = url.as_str().parse().ok()?;
        let host = host_header(&url)?;
        let parsed = Arc::new(ParsedUrl { url, uri, host });
        let mut urls = self.urls.write().unwrap_or_else(PoisonError::into_inner);
        if urls.len() >= MAX_URLS {
            urls.clear();
        }
        urls.insert(raw.to_owned(), Arc::clone(&parsed));
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_parsed_as_url_parses_it() {
        let urls = ParsedUrls::default();
        let raw = "https://Example.COM:8443/a/../hook?x=1";
        let url = |urls: &ParsedUrls| urls.get(raw).map(|p| p.url.clone());
        assert_eq!(url(&urls), Some(Url::parse(raw).unwrap()));
        assert_eq!(url(&urls), Some(Url::parse(raw).unwrap()));
    }

    #[test]
    fn the_host_header_names_the_port_only_when_it_is_not_the_schemes_default() {
        let urls = ParsedUrls::default();
        let host = |raw: &str| urls.get(raw).map(|p| p.host.to_str().unwrap().to_owned());
        for (raw, expected) in [
            ("http://127.0.0.1:8080/hook", "127.0.0.1:8080"),
            ("http://example.com/hook", "example.com"),
            ("http://example.com:80/hook", "example.com"),
            ("http://example.com:443/hook", "example.com:443"),
            ("https://Example.COM:8443/hook", "example.com:8443"),
            ("https://example.com:443/hook", "example.com"),
            ("https://example.com:80/hook", "example.com:80"),
            ("http://[::1]:9000/hook", "[::1]:9000"),
        ] {
            assert_eq!(host(raw).as_deref(), Some(expected), "{raw}");
        }
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        let urls = ParsedUrls::default();
        assert!(urls.get("ftp://example.com/hook").is_none());
        assert!(urls.get("file:///etc/passwd").is_none());
        assert!(urls.get("not a url").is_none());
    }

    #[test]
    fn the_cache_starts_over_past_its_bound() {
        let urls = ParsedUrls::default();
        for i in 0..=MAX_URLS {
            urls.get(&format!("http://example.com/{i}")).unwrap();
        }
        let held = urls.urls.read().unwrap().len();
        assert_eq!(held, 1);
    }
}
