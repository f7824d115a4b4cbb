//! A small OpenTelemetry collector for the tests: the OTLP/gRPC `TraceService` on 127.0.0.1, on a
//! port the OS picks, keeping every span it is sent (with its service's name) for a test to read.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// One span as the collector got it; ids in lowercase hex, as `traceparent` writes them.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a span that starts its trace.
    pub parent_span_id: String,
    /// Every attribute's value as text (`42`, `true`, `503 Service Unavailable`).
    pub attributes: HashMap<String, String>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Kept {
    spans: Mutex<Vec<ReceivedSpan>>,
    /// Export calls, spans or not.
    exports: Mutex<usize>,
}

/// The running collector; stops when dropped.
pub struct OtlpReceiver {
    addr: std::net::SocketAddr,
    kept: Arc<Kept>,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let kept = Arc::new(Kept::default());
        let service = TraceServiceServer::new(Collector(Arc::clone(&kept)));
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Ok(OtlpReceiver { addr, kept, server })
    }

    /// What `--otlp-endpoint` takes: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.kept.spans.lock().unwrap().clone()
    }

    /// How many export calls came, with spans or without.
    pub fn exports(&self) -> usize {
        *self.kept.exports.lock().unwrap()
    }

    /// Waits until `found` finds what it looks for in the spans received so far.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut found: impl FnMut(&[ReceivedSpan]) -> Option<T>,
    ) -> anyhow::Result<T> {
        crate::eventually(timeout, what, || {
            let got = found(&self.spans());
            async move { got }
        })
        .await
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Collector(Arc<Kept>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| text_of(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?)?)))
                            .collect(),
                    });
                }
            }
        }
        *self.0.exports.lock().unwrap() += 1;
        self.0.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()?))
}

fn text(value: &AnyValue) -> Option<String> {
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}
