use std::time::SystemTime;

use clap::Args;
use hookplane_client::{
    Client,
    v1::{
        AttemptOutcome, DeliveryAttempt, ListDeliveryAttemptsRequest, ListDeliveryAttemptsResponse,
        RecoverDeliveriesRequest, RetryDeliveryRequest,
    },
};

use crate::{
    output::Printout,
    paging::{self, Paging},
    proto_json,
    table::Table,
};

#[derive(Debug, Args)]
pub struct AttemptsArgs {
    #[command(flatten)]
    pub target: AttemptTarget,
    #[command(flatten)]
    pub paging: Paging,
}

/// Whose attempts: exactly one of a forwarding set and a subscription.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct AttemptTarget {
    #[arg(long)]
    pub forwarding_set: Option<String>,
    #[arg(long)]
    pub subscription: Option<String>,
}

pub fn attempts_request(
    target: &AttemptTarget,
    page_size: i32,
    page_token: String,
) -> ListDeliveryAttemptsRequest {
    ListDeliveryAttemptsRequest {
        forwarding_set_id: target.forwarding_set.clone().unwrap_or_default(),
        subscription_id: target.subscription.clone().unwrap_or_default(),
        page_size,
        page_token,
    }
}

pub async fn attempts(args: AttemptsArgs, client: &Client) -> anyhow::Result<Printout> {
    let mut deliveries = client.deliveries();
    let (items, next) = paging::collect(&args.paging, async |page_token| {
        let request = attempts_request(&args.target, args.paging.page_size, page_token);
        let r = deliveries
            .list_delivery_attempts(request)
            .await?
            .into_inner();
        Ok((r.attempts, r.next_page_token))
    })
    .await?;
    let table = table(&items);
    let response = ListDeliveryAttemptsResponse {
        attempts: items,
        next_page_token: next.clone(),
    };
    Ok(Printout::List {
        json: proto_json::to_value(&response)?,
        table,
        next_page_token: next,
    })
}

pub async fn retry(id: String, client: &Client) -> anyhow::Result<Printout> {
    let delivery = client
        .deliveries()
        .retry_delivery(RetryDeliveryRequest { id })
        .await?
        .into_inner();
    Ok(Printout::Resource(proto_json::to_value(&delivery)?))
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub target: AttemptTarget,
    /// Deliveries whose last attempt failed for good at or after this: an RFC 3339 time
    /// (`2026-12-06T09:00:00Z`) or how long ago (`2h`, `1d`).
    #[arg(long)]
    pub since: String,
}

/// `--since` as an instant: an RFC 3339 time, or a duration before `now`.
pub fn since_time(text: &str, now: SystemTime) -> anyhow::Result<SystemTime> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(at);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "--since: expected an RFC 3339 time (2026-12-06T09:00:00Z) or a duration ago (2h), got {text:?}"
        )
    })?;
    now.checked_sub(ago)
        .ok_or_else(|| anyhow::anyhow!("--since: {text} ago is before the epoch"))
}

pub async fn recover(args: RecoverArgs, client: &Client) -> anyhow::Result<Printout> {
    let since = since_time(&args.since, SystemTime::now())?;
    let response = client
        .deliveries()
        .recover_deliveries(RecoverDeliveriesRequest {
            forwarding_set_id: args.target.forwarding_set.unwrap_or_default(),
            subscription_id: args.target.subscription.unwrap_or_default(),
            since: Some(since.into()),
        })
        .await?
        .into_inner();
    Ok(Printout::Resource(proto_json::to_value(&response)?))
}

fn table(attempts: &[DeliveryAttempt]) -> Table {
    let mut table = Table::new(&[
        "TIME", "DELIVERY", "#", "OUTCOME", "STATUS", "LATENCY", "REASON",
    ]);
    for a in attempts {
        let outcome = AttemptOutcome::try_from(a.outcome).map_or("?", |o| o.as_str_name());
        let latency = a
            .latency
            .map(|l| format!("{}ms", l.seconds * 1000 + i64::from(l.nanos) / 1_000_000))
            .unwrap_or_default();
        let status = if a.http_status == 0 {
            "-".to_owned()
        } else {
            a.http_status.to_string()
        };
        table.row(vec![
            a.time.map(|t| t.to_string()).unwrap_or_default(),
            a.delivery_id.clone(),
            a.attempt_number.to_string(),
            outcome.to_owned(),
            status,
            latency,
            a.reason.clone(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AttemptsArgs,
    }

    #[test]
    fn attempts_of_a_forwarding_set_name_only_that_set() {
        let cli =
            Cli::try_parse_from(["attempts", "--forwarding-set", "fwd_1", "--page-size", "5"])
                .unwrap();
        let request = attempts_request(&cli.args.target, cli.args.paging.page_size, String::new());
        assert_eq!(request.forwarding_set_id, "fwd_1");
        assert_eq!(request.subscription_id, "");
        assert_eq!(request.page_size, 5);
    }

    #[test]
    fn attempts_of_a_subscription_name_only_that_subscription() {
        let cli = Cli::try_parse_from(["attempts", "--subscription", "sub_1"]).unwrap();
        let request = attempts_request(&cli.args.target, 0, "p2".into());
        assert_eq!(request.subscription_id, "sub_1");
        assert_eq!(request.forwarding_set_id, "");
        assert_eq!(request.page_token, "p2");
    }

    #[test]
    fn since_reads_an_rfc3339_time_or_a_duration_ago() {
        let now = humantime::parse_rfc3339("2026-12-06T12:00:00Z").unwrap();
        assert_eq!(
            since_time("2026-12-06T09:30:00Z", now).unwrap(),
            humantime::parse_rfc3339("2026-12-06T09:30:00Z").unwrap()
        );
        assert_eq!(
            since_time("2h", now).unwrap(),
            humantime::parse_rfc3339("2026-12-06T10:00:00Z").unwrap()
        );
        let err = since_time("yesterday", now).unwrap_err().to_string();
        assert!(err.contains("--since"), "{err}");
    }

    #[test]
    fn attempts_need_exactly_one_target() {
        assert!(Cli::try_parse_from(["attempts"]).is_err());
        assert!(
            Cli::try_parse_from(["attempts", "--forwarding-set", "f", "--subscription", "s"])
                .is_err()
        );
    }

    #[test]
    fn the_table_shows_latency_in_milliseconds_and_no_status_as_a_dash() {
        let a = DeliveryAttempt {
            attempt_number: 2,
            outcome: AttemptOutcome::Retrying as i32,
            reason: "remote network error".into(),
            latency: Some(prost_types::Duration {
                seconds: 1,
                nanos: 250_000_000,
            }),
            ..DeliveryAttempt::default()
        };
        let text = table(&[a]).render();
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("RETRYING") && row.contains("1250ms"), "{row}");
        assert!(row.contains(" - "), "{row}");
    }
}
