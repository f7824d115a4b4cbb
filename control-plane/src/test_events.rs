//! Send test: a sample event of a topic, signed like a real delivery, sent to a subscription's URL
//! at once through the same SSRF-guarded sender the nodes use. The answer is reported to the
//! caller; nothing is retried, queued or counted in the delivery log.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hookplane_outbound::{
    OutboundOptions, envelope,
    failure::Failure,
    sender::{Outgoing, Sender},
    signing::{self, Attempt},
};
use hookplane_proto::v1::{SendTestEventResponse, SignatureScheme};

use crate::clock::duration_to_proto;
use crate::error::Error;
use crate::ids;
use crate::sample_events;

/// As long as a node waits for a delivery by default.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a test event goes and how it is signed.
pub(crate) struct TestTarget<'a> {
    pub url: &'a str,
    pub scheme: SignatureScheme,
    /// The secrets in force, the current one first.
    pub secrets: &'a [String],
}

#[derive(Clone)]
pub(crate) struct TestEvents {
    sender: Sender,
}

impl TestEvents {
    pub fn new(options: &OutboundOptions) -> Result<TestEvents, Error> {
        Ok(TestEvents {
            sender: Sender::from_options(options)?,
        })
    }

    /// Sends a sample of `topic` (a catalog topic) to `target` and reports what came back.
    pub async fn send(&self, target: &TestTarget<'_>, topic: &str) -> SendTestEventResponse {
        let data = sample_events::sample(topic).unwrap_or_default();
        let now = SystemTime::now();
        let body = envelope::test_event_body(now, topic, &data);
        let event_id = ids::new_id(ids::EVENT);
        let mut response = SendTestEventResponse {
            event_id: event_id.clone(),
            request_body: String::from_utf8_lossy(&body).into_owned(),
            ..SendTestEventResponse::default()
        };
        let secrets: Vec<&str> = target.secrets.iter().map(String::as_str).collect();
        let unix_time = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let headers = match signing::headers(
            target.scheme,
            &secrets,
            Attempt {
                event_id: &event_id,
                unix_time,
                body: &body,
            },
        ) {
            Ok(headers) => headers,
            Err(_) => {
                response.failure_reason = "no usable share secret".to_owned();
                return response;
            }
        };
        let started = Instant::now();
        let result = self
            .sender
            .send(Outgoing {
                url: target.url,
                body,
                headers,
                timeout: TIMEOUT,
            })
            .await;
        response.latency = Some(duration_to_proto(started.elapsed()));
        match result {
            Ok(answer) => {
                response.http_status = i32::from(answer.status);
                response.success = (200..300).contains(&answer.status);
                if !response.success {
                    response.failure_reason = Failure::Status(answer.status).to_string();
                }
                response.response_body = answer.body_start;
            }
            Err(failure) => response.failure_reason = failure.to_string(),
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use hookplane_verify::{maac, standard};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn tester() -> TestEvents {
        TestEvents::new(&OutboundOptions {
            allow_target_network: vec!["127.0.0.0/8".parse().unwrap()],
        })
        .unwrap()
    }

    /// Answers one request with `response`; hands back the raw request.
    async fn answer_once(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            while !got.ends_with(b"}") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (url, served)
    }

    fn header<'a>(request: &'a str, name: &str) -> &'a str {
        request
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(": ")?;
                n.eq_ignore_ascii_case(name).then_some(v.trim())
            })
            .unwrap_or_else(|| panic!("no {name} in {request}"))
    }

    #[tokio::test]
    async fn a_2xx_answer_is_a_success_with_status_latency_and_body() {
        let (url, _served) =
            answer_once("HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nreceived").await;
        let secrets = [SECRET.to_owned()];
        let target = TestTarget {
            url: &url,
            scheme: SignatureScheme::Maac,
            secrets: &secrets,
        };
        let result = tester().send(&target, "prize.points_added").await;
        assert!(result.success);
        assert_eq!(result.http_status, 200);
        assert!(result.failure_reason.is_empty());
        assert_eq!(result.response_body, "received");
        assert!(result.latency.is_some());
        assert!(result.event_id.starts_with("evt_"));
    }

    #[tokio::test]
    async fn the_sample_is_marked_as_a_test_and_signed_like_a_real_event() {
        let (url, served) = answer_once("HTTP/1.1 204 No Content\r\n\r\n").await;
        let secrets = [SECRET.to_owned()];
        let target = TestTarget {
            url: &url,
            scheme: SignatureScheme::Both,
            secrets: &secrets,
        };
        let result = tester().send(&target, "message.first_open").await;
        let request = served.await.unwrap();
        let body = request.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body, result.request_body);
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["test"], serde_json::json!(true));
        assert_eq!(parsed["topic"], "message.first_open");
        assert_eq!(parsed["data"]["message_type"], "broadcast");
        assert!(
            maac::verify(
                SECRET.as_bytes(),
                body.as_bytes(),
                header(&request, "cresclab-signature")
            )
            .is_ok()
        );
        assert_eq!(
            header(&request, "cresclab-idempotency-key"),
            result.event_id
        );
        let timestamp = header(&request, "webhook-timestamp");
        assert!(
            standard::verify(
                &[standard::Secret::parse(SECRET).unwrap()],
                header(&request, "webhook-id"),
                timestamp,
                header(&request, "webhook-signature"),
                body.as_bytes(),
                timestamp.parse().unwrap(),
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn a_non_2xx_answer_reads_as_its_reason() {
        let (url, _served) =
            answer_once("HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope").await;
        let secrets = [SECRET.to_owned()];
        let target = TestTarget {
            url: &url,
            scheme: SignatureScheme::Maac,
            secrets: &secrets,
        };
        let result = tester().send(&target, "prize.points_added").await;
        assert!(!result.success);
        assert_eq!(result.http_status, 404);
        assert_eq!(result.failure_reason, "404 Not Found");
        assert_eq!(result.response_body, "nope");
    }

    #[tokio::test]
    async fn no_answer_reads_as_a_remote_network_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        let secrets = [SECRET.to_owned()];
        let target = TestTarget {
            url: &url,
            scheme: SignatureScheme::Maac,
            secrets: &secrets,
        };
        let result = tester().send(&target, "prize.points_added").await;
        assert!(!result.success);
        assert_eq!(result.http_status, 0);
        assert_eq!(
            result.failure_reason,
            "remote network error: connection refused"
        );
    }

    #[tokio::test]
    async fn a_private_address_is_refused_unless_allowed() {
        let secrets = [SECRET.to_owned()];
        let target = TestTarget {
            url: "http://10.0.0.1/hook",
            scheme: SignatureScheme::Maac,
            secrets: &secrets,
        };
        let result = TestEvents::new(&OutboundOptions::default())
            .unwrap()
            .send(&target, "prize.points_added")
            .await;
        assert!(!result.success);
        assert!(
            result.failure_reason.starts_with("refused: 10.0.0.1"),
            "{}",
            result.failure_reason
        );
    }
}
