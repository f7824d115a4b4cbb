//! The TCP connector the sender's client dials with: hyper-util's `HttpConnector`, with connections
//! that tell the client nothing about themselves. hyper-util's own connections describe their
//! addresses (`HttpInfo`), and its client puts that description into the extensions of every
//! response: a map and a box allocated, and freed, per request. Nothing here reads it; in a
//! drain's profile it was 0.8 % of the node's samples (docs/BENCHMARKS.md, change 40).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::ssrf::GuardedResolver;

type Inner = HttpConnector<GuardedResolver>;

/// [`HttpConnector`] whose connections carry no `HttpInfo`.
#[derive(Clone)]
pub(crate) struct BareConnector(pub(crate) Inner);

/// A connected TCP stream that reports a plain connection.
pub(crate) struct BareConnection(TokioIo<TcpStream>);

impl Service<Uri> for BareConnector {
    type Response = BareConnection;
    type Error = <Inner as Service<Uri>>::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<BareConnection, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(BareConnection) })
    }
}

impl Connection for BareConnection {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for BareConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for BareConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}
