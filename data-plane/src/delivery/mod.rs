//! The delivery engine: takes due jobs from the queue and makes their attempts.

pub mod breaker;
mod engine;
pub mod priority;
pub mod retry;
mod slots;
mod target;

pub use engine::{Engine, EngineSettings};
pub use priority::DeliveryPriority;
