//! How a failed command reads on stderr: `error: <CODE>: <message>` for gRPC statuses.

use tonic::{Code, Status};

pub fn describe(err: &anyhow::Error) -> String {
    match err.downcast_ref::<Status>() {
        Some(status) if status.message().is_empty() => {
            format!("error: {}", code_name(status.code()))
        }
        Some(status) => format!("error: {}: {}", code_name(status.code()), status.message()),
        // `{:#}` prints the causes too: a transport error alone says only "transport error".
        None => format!("error: {err:#}"),
    }
}

/// The canonical gRPC name; tonic's `Display` gives a sentence instead.
fn code_name(code: Code) -> &'static str {
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

#[cfg(test)]
mod tests {
    use anyhow::anyhow;

    use super::*;

    #[test]
    fn a_status_prints_its_code_name_and_message() {
        let err = anyhow::Error::from(Status::not_found("tenant tnt_x not found"));
        assert_eq!(describe(&err), "error: NOT_FOUND: tenant tnt_x not found");
    }

    #[test]
    fn a_status_without_message_prints_its_code_name() {
        let err = anyhow::Error::from(Status::new(Code::FailedPrecondition, ""));
        assert_eq!(describe(&err), "error: FAILED_PRECONDITION");
    }

    #[test]
    fn other_errors_print_with_their_causes() {
        let err = anyhow!("connection refused").context("cannot connect to http://x");
        assert_eq!(
            describe(&err),
            "error: cannot connect to http://x: connection refused"
        );
    }
}
