//! Reading a request body whole before anything looks at it, within a size cap and a deadline:
//! what every endpoint of the ingress port needs before it can check a signature. A body that
//! trickles in holds a connection and a task; past the deadline it gets 408.

use std::time::Duration;

use axum::{body::Body, http::HeaderMap, http::header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Declared or found larger than the cap: 413.
    TooLarge,
    /// Not all there by the deadline: 408.
    TooSlow,
    /// The connection failed or the body was malformed: 400.
    Unreadable,
}

/// Limits of one request's body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// From when the handler starts reading (its headers are in).
    pub deadline: Duration,
}

impl BodyLimits {
    /// The whole body, refused early when its declared length is over the cap.
    pub async fn read(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, BodyError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_bytes as u64) {
            return Err(BodyError::TooLarge);
        }
        let collect = Limited::new(body, self.max_bytes).collect();
        match tokio::time::timeout(self.deadline, collect).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(BodyError::TooLarge)
            }
            Ok(Err(_)) => Err(BodyError::Unreadable),
            Err(_) => Err(BodyError::TooSlow),
        }
    }
}
