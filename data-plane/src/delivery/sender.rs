//! The HTTP side of an attempt: one pooled client for every target, no redirects, no proxies,
//! the SSRF guard in front of both literal addresses and DNS answers.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::{failure::Failure, retry::parse_retry_after};
use crate::{
    Error,
    ssrf::{GuardedResolver, TargetGuard},
};

/// How much of an answer's body is kept for the attempt log.
const BODY_KEPT: usize = 1024;

/// What the target answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body_start: String,
    pub retry_after: Option<Duration>,
}

/// One request to make.
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub body: Bytes,
    pub headers: HeaderMap,
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    guard: Arc<TargetGuard>,
}

impl Sender {
    pub fn new(guard: Arc<TargetGuard>) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect on our behalf, past the guard.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&guard))))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("hookplane/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, guard })
    }

    /// Sends the request; an answer of any status is `Ok`, only the absence of one is `Err`.
    pub async fn send(&self, out: Outgoing<'_>) -> Result<Answer, Failure> {
        let url = url::Url::parse(out.url).map_err(|_| Failure::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Failure::InvalidUrl);
        }
        self.guard.check_url(&url).map_err(Failure::Refused)?;
        let mut response = self
            .client
            .post(url)
            .headers(out.headers)
            .body(out.body)
            .timeout(out.timeout)
            .send()
            .await
            .map_err(|e| Failure::from_http_error(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut kept = Vec::new();
        // The status is what counts; a body that breaks off midway still leaves the answer.
        while kept.len() < BODY_KEPT {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        kept.truncate(BODY_KEPT);
        Ok(Answer {
            status,
            body_start: String::from_utf8_lossy(&kept).into_owned(),
            retry_after,
        })
    }
}

/// Builds a header map from (name, value) pairs, skipping any that are not valid HTTP.
pub fn header_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    map
}
