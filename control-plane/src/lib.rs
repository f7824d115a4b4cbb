//! The hookplane control plane: the sled store of tenants, channels, forwarding sets and
//! subscriptions (secrets sealed at rest), API tokens and who may do what with them, the audit
//! trail, every admin gRPC service, the config stream to data-plane nodes, the delivery log, and
//! the notifier that emails tenants about failing forwards; and the web console that calls those
//! services for a signed-in person. The port takes TLS, and mTLS for the config stream, when
//! given a certificate.

mod attempt_writer;
mod audit;
mod auth;
mod caller;
mod channels;
mod clock;
mod config_stream;
pub mod console;
mod control_plane;
mod credentials;
mod delivery_log;
mod error;
mod forwarding;
mod ids;
mod metrics;
mod notifications;
mod notify;
mod options;
mod pagination;
mod report_intake;
mod resealing;
mod sample_events;
mod sealing;
mod shutdown;
mod store;
mod subscriptions;
mod system_stop;
mod tenants;
mod test_events;
mod tls;
mod tokens;
mod validate;

pub use control_plane::ControlPlane;
pub use error::Error;
pub use hookplane_proto::topics;
pub use metrics::{ControlMetrics, serve_metrics};
pub use options::ControlOptions;
pub use report_intake::LocalReports;
pub use tls::ControlTls;

#[cfg(test)]
mod test_fixtures;
