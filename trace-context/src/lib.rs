//! W3C trace context (`traceparent`) across hookplane's processes and its queue, for the spans the
//! binary exports over OTLP when it runs with `--otlp-endpoint`.
//!
//! Every exported span is made with [`TARGET`] at DEBUG level. Only the binary's OpenTelemetry
//! layer enables that target by default, so without the flag the span macros find nobody
//! interested and make no span at all (no allocation, no header read); each function here first
//! asks whether its span exists, for the same reason.
//!
//! A delivery is attempted later than the request that queued it, maybe on another node: the
//! enqueue span's `traceparent` rides in the job ([`traceparent`]) and each attempt's span
//! continues it ([`continue_traceparent`]), not whatever task the engine happens to run in.

mod grpc;

pub use grpc::{GrpcSpanService, GrpcSpans};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span meant for export: `hookplane::trace=debug` in a filter turns them on.
pub const TARGET: &str = "hookplane::trace";

const TRACEPARENT: &str = "traceparent";

/// Makes `span` (not yet entered) a child of the trace an incoming request's `traceparent` and
/// `tracestate` name; without a valid one the span starts a trace of its own.
pub fn continue_remote(span: &Span, headers: &http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    set_parent(
        span,
        TraceContextPropagator::new().extract(&HeaderExtractor(headers)),
    );
}

/// Makes `span` (not yet entered) a child of a stored `traceparent` (a queued job's).
pub fn continue_traceparent(span: &Span, traceparent: &str) {
    if span.is_disabled() || traceparent.is_empty() {
        return;
    }
    set_parent(
        span,
        TraceContextPropagator::new().extract(&StoredTraceparent(traceparent)),
    );
}

fn set_parent(span: &Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Refused only once the span has started, which callers do after this.
        let _ = span.set_parent(parent);
    }
}

/// `span`'s `traceparent`, to keep with what outlives it (a queued job); `None` when it is not
/// exported.
pub fn traceparent(span: &Span) -> Option<String> {
    let context = exported_context(span)?;
    let mut carrier = StoredTraceparentOut(None);
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.0
}

/// Adds `span`'s `traceparent` (and a `tracestate` it has) to an outgoing request's headers;
/// nothing when it is not exported.
pub fn inject(span: &Span, headers: &mut http::HeaderMap) {
    let Some(context) = exported_context(span) else {
        return;
    };
    TraceContextPropagator::new().inject_context(&context, &mut NonEmpty(HeaderInjector(headers)));
}

/// `span`'s OpenTelemetry context, when it has a valid one (the OTel layer is installed).
fn exported_context(span: &Span) -> Option<Context> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    context.span().span_context().is_valid().then_some(context)
}

/// A job's stored `traceparent` read as a carrier.
struct StoredTraceparent<'a>(&'a str);

impl Extractor for StoredTraceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Keeps the `traceparent` alone: a job stores one field.
struct StoredTraceparentOut(Option<String>);

impl Injector for StoredTraceparentOut {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// Leaves out empty values: the propagator sets `tracestate` even when there is none.
struct NonEmpty<I>(I);

impl<I: Injector> Injector for NonEmpty<I> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.set(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with_otel_layer(test: impl FnOnce()) {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, test);
    }

    #[test]
    fn a_span_continuing_a_stored_traceparent_is_in_its_trace_and_hands_on_its_own_id() {
        with_otel_layer(|| {
            let span = tracing::debug_span!(target: TARGET, "attempt");
            continue_traceparent(&span, INCOMING);
            let own = traceparent(&span).expect("an exported span has a traceparent");
            let parts: Vec<&str> = own.split('-').collect();
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(parts[2], "00f067aa0ba902b7");
            assert_eq!(parts[3], "01");
        });
    }

    #[test]
    fn an_incoming_traceparent_header_is_continued_and_an_empty_tracestate_not_sent() {
        with_otel_layer(|| {
            let mut incoming = http::HeaderMap::new();
            incoming.insert("traceparent", INCOMING.parse().unwrap());
            let span = tracing::debug_span!(target: TARGET, "ingress");
            continue_remote(&span, &incoming);
            let mut outgoing = http::HeaderMap::new();
            inject(&span, &mut outgoing);
            let sent = outgoing["traceparent"].to_str().unwrap();
            assert!(
                sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{sent}"
            );
            assert!(!outgoing.contains_key("tracestate"));
        });
    }

    #[test]
    fn without_the_otel_layer_nothing_is_stored_or_sent() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::debug_span!(target: TARGET, "attempt");
            continue_traceparent(&span, INCOMING);
            assert_eq!(traceparent(&span), None);
            let mut outgoing = http::HeaderMap::new();
            inject(&span, &mut outgoing);
            assert!(outgoing.is_empty());
        });
    }
}
