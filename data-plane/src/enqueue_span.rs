//! The span of an enqueue, and the trace context it hands the jobs: each job keeps the enqueue
//! span's `traceparent`, so its attempts (later, maybe on another node) are spans of the trace of
//! the request that queued it. Shared by every producer of jobs (the ingress, the Genesys
//! connector, event publishing), which import none of each other.

use tracing::Span;

use crate::queue::Job;

/// A child of the current span (the request's), for the enqueue of `jobs`; each job gets its
/// `traceparent`. Made, and the jobs marked, only while traces are exported: otherwise the span
/// is disabled and nothing is allocated.
pub(crate) fn enqueue_span(jobs: &mut [Job]) -> Span {
    let span = tracing::debug_span!(
        target: hookplane_trace_context::TARGET,
        "enqueue",
        jobs = jobs.len(),
    );
    if let Some(traceparent) = hookplane_trace_context::traceparent(&span) {
        for job in jobs {
            job.traceparent = Some(traceparent.clone());
        }
    }
    span
}
