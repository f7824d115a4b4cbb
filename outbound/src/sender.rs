//! The HTTP side of an attempt: one pooled client for every target (hyper, HTTP/1.1 and HTTP/2
//! over rustls), no redirects, no proxies, the SSRF guard in front of both literal addresses
//! and DNS answers. hyper directly rather than reqwest: reqwest's layers (a redirect policy that
//! parses each URL again even when it follows none, its request and response state) cost about
//! a quarter of the deliveries a saturated node makes (docs/BENCHMARKS.md).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::header::{HOST, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{
    Error, OutboundOptions,
    bare_connector::BareConnector,
    failure::{Failure, NetworkCause},
    parsed_urls::ParsedUrls,
    retry_after::parse_retry_after,
    ssrf::{GuardedResolver, TargetGuard},
};

/// How much of an answer's body is kept (the attempt log, a test event's result).
pub const BODY_KEPT: usize = 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const IDLE_PER_HOST: usize = 32;
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
const AGENT: &str = concat!("hookplane/", env!("CARGO_PKG_VERSION"));

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

type Connector = HttpsConnector<BareConnector>;

#[derive(Clone)]
pub struct Sender {
    client: Client<Connector, Full<Bytes>>,
    guard: Arc<TargetGuard>,
    urls: Arc<ParsedUrls>,
}

impl Sender {
    pub fn new(guard: Arc<TargetGuard>) -> Result<Self, Error> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(Arc::clone(&guard)));
        // The TLS connector in front of it takes https; plain http comes through as is.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_keepalive(Some(TCP_KEEPALIVE));
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::HttpClient(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(BareConnector(http));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .build(connector);
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
    /// `timeout` bounds the whole exchange, the start of the answer's body included.
    pub async fn send(&self, out: Outgoing<'_>) -> Result<Answer, Failure> {
        let target = self.urls.get(out.url).ok_or(Failure::InvalidUrl)?;
        self.guard
            .check_url(&target.url)
            .map_err(Failure::Refused)?;
        let mut request = http::Request::post(target.uri.clone())
            .body(Full::new(out.body))
            .map_err(|_| Failure::InvalidUrl)?;
        *request.headers_mut() = out.headers;
        let headers = request.headers_mut();
        headers.entry(HOST).or_insert_with(|| target.host.clone());
        headers
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(AGENT));
        let deadline = tokio::time::Instant::now() + out.timeout;
        let timed_out = || Failure::Network(Some(NetworkCause::Timeout));
        let response = tokio::time::timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| Failure::from_http_error(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut body = response.into_body();
        let mut kept = Vec::new();
        // The status is what counts; a body that breaks off midway, or late, still leaves the
        // answer.
        while kept.len() < BODY_KEPT {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        kept.extend_from_slice(data);
                    }
                }
                _ => break,
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A listener on a free loopback port, and the target URL of it under `scheme`.
    async fn listen(scheme: &str) -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
        (listener, url)
    }

    /// One request of [`outgoing`] as it arrives on `socket` (empty if it closes first).
    async fn read_request(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
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
        got
    }

    /// Answers one request with `response` and hands back what it received.
    async fn answer_once(response: String) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let (listener, url) = listen("http").await;
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let got = read_request(&mut socket).await;
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
            headers: HeaderMap::from_iter([(
                http::header::HeaderName::from_static("x-test"),
                HeaderValue::from_static("yes"),
            )]),
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
        let authority = url.trim_start_matches("http://").trim_end_matches("/hook");
        assert_eq!(
            request.matches("host: ").count(),
            1,
            "one Host header: {request}"
        );
        assert!(
            request.contains(&format!("host: {authority}\r\n")),
            "{request}"
        );
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

    /// What sending to a loopback port nobody listens on comes to.
    async fn failure_at_a_closed_port(scheme: &str) -> Failure {
        let (listener, url) = listen(scheme).await;
        drop(listener);
        loopback_allowed().send(outgoing(&url)).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_refused_connection_is_named() {
        assert_eq!(
            failure_at_a_closed_port("http").await,
            Failure::Network(Some(NetworkCause::ConnectionRefused))
        );
    }

    #[tokio::test]
    async fn an_answer_past_the_timeout_is_a_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let _hold = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let failure = loopback_allowed()
            .send(Outgoing {
                timeout: Duration::from_millis(200),
                ..outgoing(&url)
            })
            .await
            .unwrap_err();
        assert_eq!(failure, Failure::Network(Some(NetworkCause::Timeout)));
    }

    #[tokio::test]
    async fn an_https_target_goes_through_the_tls_connector() {
        // The TLS connector is built and reached; the TCP connect under it fails.
        assert_eq!(
            failure_at_a_closed_port("https").await,
            Failure::Network(Some(NetworkCause::ConnectionRefused))
        );
    }

    #[tokio::test]
    async fn the_user_agent_names_hookplane() {
        let (url, served) =
            answer_once("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_owned()).await;
        loopback_allowed().send(outgoing(&url)).await.unwrap();
        let request = String::from_utf8(served.await.unwrap()).unwrap();
        assert!(
            request.contains(&format!("user-agent: {AGENT}")),
            "{request}"
        );
    }

    #[tokio::test]
    async fn an_https_target_is_spoken_to_in_tls_never_in_clear() {
        // A plain listener on the target's port: what arrives must be a TLS handshake record
        // (type 22), not a request.
        let (listener, url) = listen("https").await;
        let first_bytes = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            socket.read_exact(&mut buf).await.unwrap();
            buf
        });
        let failure = loopback_allowed().send(outgoing(&url)).await.unwrap_err();
        let record = first_bytes.await.unwrap();
        assert_eq!(record[0], 0x16, "{record:?}");
        assert_ne!(&record[..4], b"POST");
        assert!(matches!(failure, Failure::Network(_)), "{failure:?}");
    }

    #[tokio::test]
    async fn a_second_request_to_a_target_reuses_the_first_ones_connection() {
        let (listener, url) = listen("http").await;
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for _ in 0..2 {
                let request = read_request(&mut socket).await;
                assert!(
                    request.ends_with(b"}"),
                    "the connection closed: {request:?}"
                );
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .unwrap();
            }
            // A second connection would be accepted here; none comes.
            tokio::time::timeout(Duration::from_millis(200), listener.accept())
                .await
                .is_err()
        });
        let sender = loopback_allowed();
        for _ in 0..2 {
            assert_eq!(sender.send(outgoing(&url)).await.unwrap().status, 200);
        }
        assert!(served.await.unwrap(), "a second connection was opened");
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
