//! The `hookplane.v1` API: messages and gRPC stubs generated from `hookplane/v1/*.proto`, the
//! encoded descriptor set that every gRPC port serves through reflection, the catalog of event
//! topics that the API's subscriptions and published events name, the format of API token
//! secrets, and status codes by their gRPC names.

pub mod token_secret;
pub mod topics;

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("hookplane.v1");
}

/// A status code's canonical gRPC name (`NOT_FOUND`), as metrics label it and grpcurl prints it;
/// tonic's `Display` gives a sentence instead.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The file descriptor set of the API and its imports, for tonic-reflection and for printing
/// messages as proto3 JSON (hookctl); every message implements `prost::Name` to find its own.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hookplane_descriptor.bin"));
