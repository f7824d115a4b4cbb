//! One module per top-level subcommand: its flags, the requests they make, and the call.

pub mod audit;
pub mod channel;
pub mod deliveries;
pub mod forwarding;
pub mod line;
pub mod notifications;
pub mod subscription;
pub mod tenant;
pub mod tokens;
