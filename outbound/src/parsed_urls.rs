//! Target URLs parsed once. A node sends to the same few hundred URLs all day, and parsing one
//! (its host through IDNA included) cost more than the rest of building the request: the
//! profile of a saturated node put it at about 6% of the delivery threads.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use url::Url;

/// One target URL, as the guard reads it and as the request carries it.
pub(crate) struct ParsedUrl {
    pub url: Url,
    pub uri: http::Uri,
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
        let parsed = Arc::new(ParsedUrl { url, uri });
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
