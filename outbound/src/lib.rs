//! Everything hookplane sends to a brand's URL, shared by the data plane (forwards and event
//! deliveries) and the control plane (test events): the SSRF guard, the pooled HTTP sender,
//! failure reasons as a person reads them, `Retry-After`, brand URLs as emails and logs show them, and the event webhook wire format
//! (the envelope and its MAAC / Standard Webhooks signatures).

mod bare_connector;
mod error;
mod masked_url;
mod options;
mod parsed_urls;

pub mod envelope;
pub mod failure;
pub mod retry_after;
pub mod sender;
pub mod signing;
pub mod ssrf;

pub use error::Error;
pub use masked_url::masked_url;
pub use options::OutboundOptions;
