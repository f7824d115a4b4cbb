//! The one HTTP operation connectors need (a POST); what it comes to is `crate::attempt`'s.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hookplane_outbound::sender::{Outgoing, Sender};
use http::HeaderMap;

use crate::attempt::{Reply, Unanswered};

/// One POST to make.
#[derive(Debug, Clone)]
pub struct Post {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
}

/// Sends POSTs; the node implements it with its guarded sender.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn post(&self, post: Post) -> Result<Reply, Unanswered>;
}

/// The node's pooled sender, SSRF guard included: connectors reach Genesys and LINE through the
/// same checks as any brand URL. It keeps the first KiB of an answer, ample for a token.
#[async_trait]
impl Transport for Sender {
    async fn post(&self, post: Post) -> Result<Reply, Unanswered> {
        // A connector's calls are its attempt's, as a forward's request is (when traces are
        // exported): Genesys or LINE may continue the trace, or ignore the header.
        let mut headers = post.headers;
        hookplane_trace_context::inject(&tracing::Span::current(), &mut headers);
        let answer = self
            .send(Outgoing {
                url: &post.url,
                body: post.body,
                headers,
                timeout: post.timeout,
            })
            .await
            .map_err(|failure| Unanswered::from(&failure))?;
        Ok(Reply {
            status: answer.status,
            body: Bytes::from(answer.body_start),
            retry_after: answer.retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_guarded_sender_refuses_loopback_unless_allowed() {
        let sender = Sender::from_options(&hookplane_outbound::OutboundOptions::default()).unwrap();
        let err = sender
            .post(Post {
                url: "http://127.0.0.1:9/oauth/token".to_owned(),
                headers: HeaderMap::new(),
                body: Bytes::new(),
                timeout: Duration::from_secs(1),
            })
            .await
            .unwrap_err();
        assert!(
            err.reason.starts_with("refused: 127.0.0.1"),
            "{}",
            err.reason
        );
        assert!(!err.retryable);
    }
}
