//! A span per call on a tonic server, continuing the caller's `traceparent` metadata: the admin
//! RPCs of the control plane, event publishing on a node. Without an exporting subscriber the
//! call passes through untouched (no span, no box).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::future::Either;
use tracing::{Instrument, field::Empty};

use crate::{TARGET, continue_remote};

/// The tower layer to put around a tonic server's routes.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcSpans;

impl<S> tower_layer::Layer<S> for GrpcSpans {
    type Service = GrpcSpanService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcSpanService { inner }
    }
}

/// See [`GrpcSpans`]. The span ends when the answer's headers are out: a unary call's whole work,
/// a stream's start.
#[derive(Clone, Debug)]
pub struct GrpcSpanService<S> {
    inner: S,
}

type Traced<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcSpanService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Traced<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let span = tracing::debug_span!(
            target: TARGET,
            "grpc call",
            otel.name = path,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service_of(path),
            rpc.method = method_of(path),
            rpc.grpc.status_code = Empty,
        );
        if span.is_disabled() {
            return Either::Left(self.inner.call(request));
        }
        continue_remote(&span, request.headers());
        let call = span
            .in_scope(|| self.inner.call(request))
            .instrument(span.clone());
        Either::Right(Box::pin(async move {
            let answer = call.await;
            // An error is answered at once, its status in the headers; a success's is in the
            // trailers after the body, which this span does not wait for.
            if let Some(code) = answer.as_ref().ok().and_then(grpc_status) {
                span.record("rpc.grpc.status_code", code);
                if code != 0 {
                    span.record("otel.status_code", "ERROR");
                }
            }
            answer
        }))
    }
}

/// `hookplane.v1.TenantService` of `/hookplane.v1.TenantService/ListTenants`.
fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .split_once('/')
        .map_or("", |(service, _)| service)
}

/// `ListTenants` of `/hookplane.v1.TenantService/ListTenants`.
fn method_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(_, method)| method)
}

fn grpc_status<B>(response: &http::Response<B>) -> Option<i64> {
    response
        .headers()
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_its_service_and_method() {
        let path = "/hookplane.v1.TenantService/ListTenants";
        assert_eq!(service_of(path), "hookplane.v1.TenantService");
        assert_eq!(method_of(path), "ListTenants");
        assert_eq!(service_of("/"), "");
    }
}
