//! How a failed command reads on stderr: `error: <CODE>: <message>` for gRPC statuses.

use tonic::Status;

pub fn describe(err: &anyhow::Error) -> String {
    match err.downcast_ref::<Status>() {
        Some(status) if status.message().is_empty() => {
            format!("error: {}", hookplane_client::code_name(status.code()))
        }
        Some(status) => format!(
            "error: {}: {}",
            hookplane_client::code_name(status.code()),
            status.message()
        ),
        // `{:#}` prints the causes too: a transport error alone says only "transport error".
        None => format!("error: {err:#}"),
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
        let err = anyhow::Error::from(Status::new(tonic::Code::FailedPrecondition, ""));
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
