//! The hyper client every scenario sends with: pooled keep-alive HTTP/1.1, Nagle off.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4096)
        .build(connector)
}

/// A POST answered with anything at all; the status, or the transport error.
pub async fn post(
    client: &HttpClient,
    uri: Uri,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<StatusCode> {
    let mut request = Request::post(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::new(body))?).await?;
    let status = response.status();
    // Reading the body to its end hands the connection back to the pool.
    response.into_body().collect().await?;
    Ok(status)
}

/// A GET's status and body text (for /readyz and /metrics).
pub async fn get_text(uri: Uri) -> anyhow::Result<(StatusCode, String)> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let response = client.get(uri).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        String::from_utf8(body.to_vec()).context("a body that is not UTF-8")?,
    ))
}
