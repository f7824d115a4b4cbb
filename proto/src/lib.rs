//! The `hookplane.v1` API: messages and gRPC stubs generated from `hookplane/v1/*.proto`, the
//! encoded descriptor set that every gRPC port serves through reflection, the catalog of event
//! topics that the API's subscriptions and published events name, and the format of API token
//! secrets.

pub mod token_secret;
pub mod topics;

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("hookplane.v1");
}

/// The file descriptor set of the API and its imports, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hookplane_descriptor.bin"));
