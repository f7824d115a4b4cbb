//! The HTTP side of an attempt: one pooled client for every target, no redirects, no proxies,
//! the SSRF guard in front of both literal addresses and DNS answers.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::{
    Error, OutboundOptions,
    failure::Failure,
    parsed_urls::ParsedUrls,
    retry_after::parse_retry_after,
    ssrf::{GuardedResolver, TargetGuard},
};

/// How much of an answer's body is kept (the attempt log, a test event's result).
pub const BODY_KEPT: usize = 1024;

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
    urls: Arc<ParsedUrls>,
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
        Ok(Self {
            client,
            guard,
            urls: Arc::default(),
        })
    }

    /// A sender whose guard lets the operator's allowed networks through.
    pub fn from_options(options: &OutboundOptions) -> Result<Self, Error> {
        Self::new(Arc::new(TargetGuard::new(
            options.allow_target_network.clone(),
        )))
    }

    /// Sends the request; an answer of any status is `Ok`, only the absence of one is `Err`.
    pub async fn send(&self, out: Outgoing<'_>) -> Result<Answer, Failure> {
        let url = self.urls.get(out.url).ok_or(Failure::InvalidUrl)?;
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Answers one request with `response` and hands back what it received.
    async fn answer_once(response: String) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers and the small body arrive together; stop at the body's end.
            while !got.ends_with(b"}") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            got
        });
        (url, served)
    }

    fn loopback_allowed() -> Sender {
        Sender::from_options(&OutboundOptions {
            allow_target_network: vec!["127.0.0.0/8".parse().unwrap()],
        })
        .unwrap()
    }

    fn outgoing(url: &str) -> Outgoing<'_> {
        Outgoing {
            url,
            body: Bytes::from_static(b"{\"a\":1}"),
            headers: header_map([("x-test", "yes")]),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn the_body_and_headers_go_out_as_given() {
        let (url, served) =
            answer_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned()).await;
        let answer = loopback_allowed().send(outgoing(&url)).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body_start, "ok");
        let request = String::from_utf8(served.await.unwrap()).unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1"), "{request}");
        assert!(request.contains("x-test: yes"), "{request}");
        assert!(request.ends_with("{\"a\":1}"), "{request}");
    }

    #[tokio::test]
    async fn only_the_first_kib_of_the_answer_is_kept() {
        let long = "x".repeat(3000);
        let (url, _served) = answer_once(format!(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\n\r\n{long}",
            long.len()
        ))
        .await;
        let answer = loopback_allowed().send(outgoing(&url)).await.unwrap();
        assert_eq!(answer.status, 500);
        assert_eq!(answer.body_start.len(), BODY_KEPT);
    }

    #[tokio::test]
    async fn retry_after_is_read_from_the_answer() {
        let (url, _served) = answer_once(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n"
                .to_owned(),
        )
        .await;
        let answer = loopback_allowed().send(outgoing(&url)).await.unwrap();
        assert_eq!(answer.retry_after, Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn a_loopback_target_is_refused_without_an_allowed_network() {
        let sender = Sender::from_options(&OutboundOptions::default()).unwrap();
        let failure = sender
            .send(outgoing("http://127.0.0.1:9/hook"))
            .await
            .unwrap_err();
        assert!(matches!(failure, Failure::Refused(_)), "{failure}");
    }

    #[tokio::test]
    async fn a_url_that_is_not_http_is_invalid() {
        let failure = loopback_allowed()
            .send(outgoing("ftp://127.0.0.1/hook"))
            .await
            .unwrap_err();
        assert_eq!(failure, Failure::InvalidUrl);
    }
}
