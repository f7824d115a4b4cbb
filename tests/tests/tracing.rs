//! OpenTelemetry traces of a real `hookplane standalone` with `--otlp-endpoint`, exported to a
//! small OTLP collector the test runs: one trace from the incoming `traceparent` of a LINE request
//! through its enqueue to each delivery attempt, each receiver handed the attempt's
//! `traceparent`; admin RPCs continue the caller's trace. Without the flag nothing is exported.

use std::time::Duration;

use hookplane_client::v1;
use hookplane_tests::{
    FIXTURE_CHANNEL_SECRET, OtlpReceiver, Receiver, Respond, Standalone, api, eventually, fixture,
    ingress, otlp::ReceivedSpan,
};
use prost_types::{Struct, Value, value::Kind};

const WAIT: Duration = Duration::from_secs(20);
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// A batch of spans goes out every 100 ms instead of every 5 s.
const SHORT_BATCH_DELAY: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

fn caller_traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// POSTs the text fixture, signed, with the caller's `traceparent`.
async fn post_traced(s: &Standalone, channel: &str) -> reqwest::Response {
    let body = fixture("text.json");
    let signature = hookplane_verify::line::sign(FIXTURE_CHANNEL_SECRET.as_bytes(), &body);
    reqwest::Client::new()
        .post(ingress::webhook_url(&s.ingress_url(), channel))
        .header("content-type", "application/json; charset=utf-8")
        .header("x-line-signature", signature)
        .header("traceparent", caller_traceparent())
        .body(body)
        .send()
        .await
        .unwrap()
}

fn in_caller_trace<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE && s.name == name)
        .collect()
}

/// The receiver's single request's `traceparent`, split into (trace id, parent span id).
fn traceparent_of(receiver: &Receiver) -> (String, String) {
    let requests = receiver.requests();
    let header = requests[0]
        .header("traceparent")
        .expect("a delivery carries a traceparent");
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_forward_is_one_trace_from_the_callers_traceparent_through_the_enqueue_to_each_attempt() {
    let collector = OtlpReceiver::start().await.unwrap();
    let accepting = Receiver::start().await.unwrap();
    let refusing = Receiver::start_with(Respond::Status(404)).await.unwrap();
    let endpoint = collector.endpoint();
    let s = Standalone::start_with_env(&["--otlp-endpoint", &endpoint], &[SHORT_BATCH_DELAY])
        .await
        .unwrap();
    let client = s.admin().await.unwrap();
    let (channel, sets) =
        api::channel_forwarding_to(&client, &[accepting.url("/ok"), refusing.url("/gone")])
            .await
            .unwrap();
    ingress::wait_for_channel(&s.ingress_url(), &channel)
        .await
        .unwrap();

    assert_eq!(post_traced(&s, &channel).await.status(), 200);
    accepting.wait_for(1, WAIT).await.unwrap();
    refusing.wait_for(1, WAIT).await.unwrap();
    let spans = collector
        .wait_for(WAIT, "both attempts' spans", |spans| {
            (in_caller_trace(spans, "delivery attempt").len() == 2).then(|| spans.to_vec())
        })
        .await
        .unwrap();

    let webhook = in_caller_trace(&spans, "POST /api/webhook/line/{channel_id}/events");
    assert_eq!(webhook.len(), 1, "{spans:#?}");
    let webhook = webhook[0];
    assert_eq!(webhook.parent_span_id, CALLER_SPAN);
    assert_eq!(webhook.service, "hookplane");
    assert_eq!(webhook.attribute("channel_id"), Some(channel.as_str()));
    assert_eq!(webhook.attribute("verdict"), Some("accepted"));
    let enqueue = in_caller_trace(&spans, "enqueue");
    assert_eq!(enqueue.len(), 1, "{spans:#?}");
    let enqueue = enqueue[0];
    assert_eq!(enqueue.parent_span_id, webhook.span_id);
    assert_eq!(enqueue.attribute("jobs"), Some("2"));

    let attempts = in_caller_trace(&spans, "delivery attempt");
    let attempt_to = |set: &str| {
        *attempts
            .iter()
            .find(|a| a.attribute("target") == Some(set))
            .unwrap_or_else(|| panic!("no attempt span for {set}: {attempts:#?}"))
    };
    let delivered = attempt_to(&sets[0]);
    let refused = attempt_to(&sets[1]);
    for attempt in [delivered, refused] {
        assert_eq!(attempt.parent_span_id, enqueue.span_id);
        assert_eq!(attempt.attribute("attempt"), Some("1"));
    }
    assert_eq!(delivered.attribute("status"), Some("200"));
    assert_eq!(delivered.attribute("reason"), None);
    assert_eq!(delivered.attribute("outcome"), Some("succeeded"));
    assert_eq!(refused.attribute("status"), Some("404"));
    assert_eq!(refused.attribute("reason"), Some("404 Not Found"));
    assert_eq!(refused.attribute("outcome"), Some("failed"));

    // Each receiver can continue the trace from the very attempt that reached it.
    assert_eq!(
        traceparent_of(&accepting),
        (CALLER_TRACE.to_owned(), delivered.span_id.clone())
    );
    assert_eq!(
        traceparent_of(&refusing),
        (CALLER_TRACE.to_owned(), refused.span_id.clone())
    );
}

#[tokio::test]
async fn a_published_event_is_one_trace_from_the_publishers_traceparent_to_its_attempt() {
    let collector = OtlpReceiver::start().await.unwrap();
    let receiver = Receiver::start().await.unwrap();
    let endpoint = collector.endpoint();
    let s = Standalone::start_with_env(&["--otlp-endpoint", &endpoint], &[SHORT_BATCH_DELAY])
        .await
        .unwrap();
    let admin = s.admin().await.unwrap();
    let publisher = s.publisher().await.unwrap();
    let tenant = api::create_tenant(&admin, "Brand").await.unwrap().id;
    let topic = "prize.points_added";
    let subscription = admin
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: tenant.clone(),
            subscription: Some(api::subscription(
                "points",
                &receiver.url("/events"),
                &[topic],
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let event = || v1::PublishEventRequest {
        tenant_id: tenant.clone(),
        topic: topic.to_owned(),
        data: Some(Value {
            kind: Some(Kind::StructValue(Struct::default())),
        }),
        idempotency_key: String::new(),
    };
    // Untraced events until the node knows the subscription.
    eventually(WAIT, "the node to match the subscription", || async {
        let answer = publisher.events().publish_event(event()).await.ok()?;
        (answer.into_inner().matched_subscriptions == 1).then_some(())
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(event());
    request
        .metadata_mut()
        .insert("traceparent", caller_traceparent().parse().unwrap());
    publisher.events().publish_event(request).await.unwrap();

    let spans = collector
        .wait_for(WAIT, "the attempt's span", |spans| {
            (in_caller_trace(spans, "delivery attempt").len() == 1).then(|| spans.to_vec())
        })
        .await
        .unwrap();
    let call = in_caller_trace(&spans, "/hookplane.v1.EventService/PublishEvent");
    assert_eq!(call.len(), 1, "{spans:#?}");
    assert_eq!(call[0].parent_span_id, CALLER_SPAN);
    let enqueue = in_caller_trace(&spans, "enqueue");
    assert_eq!(enqueue.len(), 1, "{spans:#?}");
    assert_eq!(enqueue[0].parent_span_id, call[0].span_id);
    let attempt = in_caller_trace(&spans, "delivery attempt")[0];
    assert_eq!(attempt.parent_span_id, enqueue[0].span_id);
    assert_eq!(attempt.attribute("target"), Some(subscription.id.as_str()));
    assert_eq!(attempt.attribute("status"), Some("200"));
    let traced = receiver
        .requests()
        .into_iter()
        .filter_map(|r| r.header("traceparent").map(str::to_owned))
        .find(|t| t.contains(CALLER_TRACE))
        .expect("the traced event's delivery carries its traceparent");
    assert_eq!(traced, format!("00-{CALLER_TRACE}-{}-01", attempt.span_id));
}

#[tokio::test]
async fn an_admin_rpc_with_a_traceparent_is_a_span_in_the_callers_trace() {
    let collector = OtlpReceiver::start().await.unwrap();
    let endpoint = collector.endpoint();
    let s = Standalone::start_with_env(&["--otlp-endpoint", &endpoint], &[SHORT_BATCH_DELAY])
        .await
        .unwrap();
    let client = s.admin().await.unwrap();
    let mut request = tonic::Request::new(v1::ListTenantsRequest::default());
    request
        .metadata_mut()
        .insert("traceparent", caller_traceparent().parse().unwrap());
    client.tenants().list_tenants(request).await.unwrap();

    let call = collector
        .wait_for(WAIT, "the ListTenants span", |spans| {
            spans
                .iter()
                .find(|s| s.name == "/hookplane.v1.TenantService/ListTenants")
                .cloned()
        })
        .await
        .unwrap();
    assert_eq!(call.trace_id, CALLER_TRACE);
    assert_eq!(call.parent_span_id, CALLER_SPAN);
    assert_eq!(call.attribute("rpc.method"), Some("ListTenants"));
    assert_eq!(
        call.attribute("rpc.service"),
        Some("hookplane.v1.TenantService")
    );
}

#[tokio::test]
async fn without_the_flag_nothing_is_exported_even_when_the_otel_variables_name_a_collector() {
    let collector = OtlpReceiver::start().await.unwrap();
    let receiver = Receiver::start().await.unwrap();
    let endpoint = collector.endpoint();
    let mut s = Standalone::start_with_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            SHORT_BATCH_DELAY,
        ],
    )
    .await
    .unwrap();
    let client = s.admin().await.unwrap();
    let (channel, _) = api::channel_forwarding_to(&client, &[receiver.url("/crm")])
        .await
        .unwrap();
    ingress::wait_for_channel(&s.ingress_url(), &channel)
        .await
        .unwrap();
    assert_eq!(post_traced(&s, &channel).await.status(), 200);
    receiver.wait_for(1, WAIT).await.unwrap();
    // A clean stop flushes whatever an exporter would hold: with none installed, nothing comes.
    assert!(s.terminate().await.unwrap().success());

    assert_eq!(collector.exports(), 0, "{:#?}", collector.spans());
    assert_eq!(receiver.requests()[0].header("traceparent"), None);
}

#[tokio::test]
async fn a_clean_stop_exports_the_spans_the_batch_still_holds() {
    let collector = OtlpReceiver::start().await.unwrap();
    let endpoint = collector.endpoint();
    // A batch goes out every ten minutes: only the stop's flush can send this one in time.
    let mut s = Standalone::start_with_env(
        &["--otlp-endpoint", &endpoint],
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    )
    .await
    .unwrap();
    let client = s.admin().await.unwrap();
    let mut request = tonic::Request::new(v1::ListTenantsRequest::default());
    request
        .metadata_mut()
        .insert("traceparent", caller_traceparent().parse().unwrap());
    client.tenants().list_tenants(request).await.unwrap();
    assert!(s.terminate().await.unwrap().success());

    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == CALLER_TRACE && s.name.ends_with("/ListTenants")),
        "{spans:#?}"
    );
}
