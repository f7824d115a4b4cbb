//! Where the process's log lines and, with `--otlp-endpoint`, its spans go.
//!
//! Log lines: stderr, filtered by `RUST_LOG` (default `info`). Spans: exported over OTLP/gRPC
//! by a batch processor, the spans of target `hookplane::trace` alone (`hookplane_trace_context`
//! says which: one per LINE request, enqueue, delivery attempt and gRPC call). Without the flag no
//! OpenTelemetry layer is installed and those spans are never made.
//!
//! The SDK's builders read the standard variables: `OTEL_EXPORTER_OTLP_TRACES_*` /
//! `OTEL_EXPORTER_OTLP_*` (headers, timeout, compression), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`. The flag's endpoint
//! wins over `OTEL_EXPORTER_OTLP_ENDPOINT`, as a programmatic setting does in the SDK.

use anyhow::Context;
use opentelemetry::{Key, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tonic::transport::ClientTlsConfig;
use tracing::{Level, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::LogFormat;

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` gives one.
const SERVICE_NAME: &str = "hookplane";

/// Spans still to be exported; [`Exporting::flush`] sends them at shutdown.
pub struct Exporting {
    provider: SdkTracerProvider,
}

/// Installs the process's subscriber: log lines as `format` says, and the span exporter to
/// `otlp_endpoint` when given.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Option<Exporting>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(endpoint) = otlp_endpoint else {
        // As before the flag existed: one filter in front of everything, nothing else installed.
        tracing_subscriber::registry()
            .with(filter)
            .with(log_lines(format))
            .init();
        return Ok(None);
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if endpoint.starts_with("https://") {
        // tonic trusts no root unless told; a collector's certificate is checked against the
        // system's, as the other dials of the binary do.
        exporter = exporter.with_tls_config(ClientTlsConfig::new().with_native_roots());
    }
    let exporter = exporter.build().context("--otlp-endpoint")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("hookplane"))
        .with_filter(Targets::new().with_target(hookplane_trace_context::TARGET, Level::DEBUG));
    // Each layer has its own filter: `RUST_LOG` decides what is logged, never what is exported.
    tracing_subscriber::registry()
        .with(log_lines(format).with_filter(filter))
        .with(spans)
        .init();
    Ok(Some(Exporting { provider }))
}

/// Log lines on stderr, as text or JSON objects.
fn log_lines<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    }
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, the SDK's own), named
/// `hookplane` where those name no service.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder().with_service_name(SERVICE_NAME).build()
    }
}

impl Exporting {
    /// Exports what the batch still holds and stops the exporter. The processor waits on a
    /// thread of its own, so the wait runs off the async workers.
    pub async fn flush(self) {
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not export the last spans"),
            Err(e) => tracing::warn!(error = %e, "could not export the last spans"),
        }
    }
}
