use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use hookplane_client::{
    Client,
    v1::{
        CreateSubscriptionRequest, DeleteSubscriptionRequest, GetSubscriptionRequest,
        ListSubscriptionsRequest, ListSubscriptionsResponse, ResumeSubscriptionRequest,
        RevealSecretRequest, RotateSecretRequest, SendTestEventRequest, SignatureScheme,
        StopSubscriptionRequest, Subscription, SubscriptionState, UpdateSubscriptionRequest,
    },
};
use prost_types::FieldMask;

use crate::{
    flag_values,
    output::Printout,
    paging::{self, Paging},
    proto_json,
    table::Table,
};

/// Outgoing event webhooks: a tenant's URL subscribed to event types.
#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Subscribe a URL to event types.
    Create(CreateArgs),
    /// List a tenant's subscriptions.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one subscription.
    Get { id: String },
    /// Change the fields given; the others stay as they are.
    Update(UpdateArgs),
    /// Delete a subscription.
    Delete { id: String },
    /// Stop delivering; events published meanwhile are dropped, even after a resume.
    Stop { id: String },
    /// Deliver again.
    Resume { id: String },
    /// Print the share secret (the public key for standard-webhooks-ed25519).
    RevealSecret { id: String },
    /// Make a new share secret (key pair) and print it (its public key).
    RotateSecret {
        id: String,
        /// How long the old secret keeps signing too, such as 1h (at most 7 days; default 0).
        #[arg(long, value_parser = flag_values::duration)]
        grace: Option<prost_types::Duration>,
    },
    /// Send a sample event to the URL now and print the answer.
    SendTest {
        id: String,
        #[arg(long)]
        event_type: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    /// CrescLab-Signature.
    Maac,
    /// webhook-id, webhook-timestamp, webhook-signature.
    StandardWebhooks,
    /// Both header sets.
    Both,
    /// The webhook-* headers with asymmetric v1a (ed25519) signatures: reveal-secret prints the
    /// whpk_ public key receivers verify with, never the signing key.
    StandardWebhooksEd25519,
}

impl From<SchemeArg> for SignatureScheme {
    fn from(scheme: SchemeArg) -> SignatureScheme {
        match scheme {
            SchemeArg::Maac => SignatureScheme::Maac,
            SchemeArg::StandardWebhooks => SignatureScheme::StandardWebhooks,
            SchemeArg::Both => SignatureScheme::Both,
            SchemeArg::StandardWebhooksEd25519 => SignatureScheme::StandardWebhooksEd25519,
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub url: String,
    /// A topic such as receipt.receipt_validated (repeatable, at least one).
    #[arg(long = "event-type", required = true)]
    pub event_types: Vec<String>,
    /// How events are signed (server default maac).
    #[arg(long, value_enum)]
    pub scheme: Option<SchemeArg>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub url: Option<String>,
    /// Replaces all event types (repeatable).
    #[arg(long = "event-type")]
    pub event_types: Vec<String>,
    #[arg(long, value_enum)]
    pub scheme: Option<SchemeArg>,
}

fn scheme_value(scheme: Option<SchemeArg>) -> i32 {
    scheme.map_or(SignatureScheme::Unspecified, SignatureScheme::from) as i32
}

pub fn create_request(args: &CreateArgs) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        tenant_id: args.tenant.clone(),
        subscription: Some(Subscription {
            name: args.name.clone(),
            url: args.url.clone(),
            event_types: args.event_types.clone(),
            signature_scheme: scheme_value(args.scheme),
            ..Subscription::default()
        }),
    }
}

pub fn update_request(args: &UpdateArgs) -> anyhow::Result<UpdateSubscriptionRequest> {
    let mut sub = Subscription {
        id: args.id.clone(),
        ..Subscription::default()
    };
    let mut paths = Vec::new();
    if let Some(name) = &args.name {
        sub.name = name.clone();
        paths.push("name");
    }
    if let Some(url) = &args.url {
        sub.url = url.clone();
        paths.push("url");
    }
    if !args.event_types.is_empty() {
        sub.event_types = args.event_types.clone();
        paths.push("event_types");
    }
    if args.scheme.is_some() {
        sub.signature_scheme = scheme_value(args.scheme);
        paths.push("signature_scheme");
    }
    if paths.is_empty() {
        bail!("nothing to update: give --name, --url, --event-type or --scheme");
    }
    Ok(UpdateSubscriptionRequest {
        subscription: Some(sub),
        update_mask: Some(FieldMask {
            paths: paths.into_iter().map(str::to_owned).collect(),
        }),
    })
}

pub async fn run(command: SubscriptionCommand, client: &Client) -> anyhow::Result<Printout> {
    let mut subs = client.subscriptions();
    let one = |s: Subscription| proto_json::to_value(&s).map(Printout::Resource);
    Ok(match command {
        SubscriptionCommand::Create(args) => one(subs
            .create_subscription(create_request(&args))
            .await?
            .into_inner())?,
        SubscriptionCommand::List { tenant, paging } => {
            let (items, next) = paging::collect(&paging, async |page_token| {
                let r = subs
                    .list_subscriptions(ListSubscriptionsRequest {
                        tenant_id: tenant.clone(),
                        page_size: paging.page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((r.subscriptions, r.next_page_token))
            })
            .await?;
            let table = table(&items);
            let response = ListSubscriptionsResponse {
                subscriptions: items,
                next_page_token: next.clone(),
            };
            Printout::List {
                json: proto_json::to_value(&response)?,
                table,
                next_page_token: next,
            }
        }
        SubscriptionCommand::Get { id } => one(subs
            .get_subscription(GetSubscriptionRequest { id })
            .await?
            .into_inner())?,
        SubscriptionCommand::Update(args) => one(subs
            .update_subscription(update_request(&args)?)
            .await?
            .into_inner())?,
        SubscriptionCommand::Delete { id } => {
            subs.delete_subscription(DeleteSubscriptionRequest { id: id.clone() })
                .await?;
            Printout::Deleted(id)
        }
        SubscriptionCommand::Stop { id } => one(subs
            .stop_subscription(StopSubscriptionRequest { id })
            .await?
            .into_inner())?,
        SubscriptionCommand::Resume { id } => one(subs
            .resume_subscription(ResumeSubscriptionRequest { id })
            .await?
            .into_inner())?,
        SubscriptionCommand::RevealSecret { id } => Printout::Resource(proto_json::to_value(
            &subs
                .reveal_secret(RevealSecretRequest { id })
                .await?
                .into_inner(),
        )?),
        SubscriptionCommand::RotateSecret { id, grace } => {
            let request = RotateSecretRequest {
                id,
                grace_period: grace,
            };
            Printout::Resource(proto_json::to_value(
                &subs.rotate_secret(request).await?.into_inner(),
            )?)
        }
        SubscriptionCommand::SendTest { id, event_type } => {
            let request = SendTestEventRequest { id, event_type };
            Printout::Resource(proto_json::to_value(
                &subs.send_test_event(request).await?.into_inner(),
            )?)
        }
    })
}

fn table(subs: &[Subscription]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "STATE", "SCHEME", "EVENT TYPES", "URL"]);
    for s in subs {
        let state = SubscriptionState::try_from(s.state).map_or("?", |x| x.as_str_name());
        let scheme = match SignatureScheme::try_from(s.signature_scheme) {
            Ok(SignatureScheme::StandardWebhooks) => "standard-webhooks",
            Ok(SignatureScheme::Both) => "both",
            Ok(SignatureScheme::StandardWebhooksEd25519) => "standard-webhooks-ed25519",
            Ok(_) => "maac",
            Err(_) => "?",
        };
        table.row(vec![
            s.id.clone(),
            s.name.clone(),
            state.to_owned(),
            scheme.to_owned(),
            s.event_types.join(","),
            s.url.clone(),
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
        #[command(subcommand)]
        command: SubscriptionCommand,
    }

    fn parse(args: &[&str]) -> SubscriptionCommand {
        Cli::try_parse_from(std::iter::once("subscription").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    const CREATE: [&str; 9] = [
        "create",
        "--tenant",
        "tnt_1",
        "--name",
        "crm",
        "--url",
        "https://crm.test/events",
        "--event-type",
        "receipt.receipt_validated",
    ];

    #[test]
    fn create_maps_every_flag_into_the_subscription() {
        let mut args = CREATE.to_vec();
        args.extend([
            "--event-type",
            "prize.points_added",
            "--scheme",
            "standard-webhooks",
        ]);
        let SubscriptionCommand::Create(args) = parse(&args) else {
            panic!("not create")
        };
        let request = create_request(&args);
        assert_eq!(request.tenant_id, "tnt_1");
        let s = request.subscription.unwrap();
        assert_eq!(s.name, "crm");
        assert_eq!(s.url, "https://crm.test/events");
        assert_eq!(
            s.event_types,
            ["receipt.receipt_validated", "prize.points_added"]
        );
        assert_eq!(s.signature_scheme, SignatureScheme::StandardWebhooks as i32);
    }

    #[test]
    fn create_without_scheme_leaves_it_to_the_server() {
        let SubscriptionCommand::Create(args) = parse(&CREATE) else {
            panic!("not create")
        };
        let s = create_request(&args).subscription.unwrap();
        assert_eq!(s.signature_scheme, SignatureScheme::Unspecified as i32);
    }

    #[test]
    fn create_requires_an_event_type() {
        assert!(
            Cli::try_parse_from(["s", "create", "--tenant", "t", "--name", "n", "--url", "u"])
                .is_err()
        );
    }

    #[test]
    fn create_refuses_an_unknown_scheme() {
        let mut args = vec!["s"];
        args.extend(CREATE);
        args.extend(["--scheme", "hmac"]);
        assert!(Cli::try_parse_from(args).is_err());
    }

    #[test]
    fn update_masks_only_the_fields_given() {
        let SubscriptionCommand::Update(args) =
            parse(&["update", "sub_1", "--event-type", "a.b", "--scheme", "both"])
        else {
            panic!("not update")
        };
        let request = update_request(&args).unwrap();
        assert_eq!(
            request.update_mask.unwrap().paths,
            ["event_types", "signature_scheme"]
        );
        let s = request.subscription.unwrap();
        assert_eq!(s.id, "sub_1");
        assert_eq!(s.signature_scheme, SignatureScheme::Both as i32);
    }

    #[test]
    fn the_ed25519_scheme_is_standard_webhooks_ed25519() {
        let SubscriptionCommand::Update(args) =
            parse(&["update", "sub_1", "--scheme", "standard-webhooks-ed25519"])
        else {
            panic!("not update")
        };
        let s = update_request(&args).unwrap().subscription.unwrap();
        assert_eq!(
            s.signature_scheme,
            SignatureScheme::StandardWebhooksEd25519 as i32
        );
    }

    #[test]
    fn update_without_any_field_is_refused() {
        let SubscriptionCommand::Update(args) = parse(&["update", "sub_1"]) else {
            panic!("not update")
        };
        assert!(update_request(&args).is_err());
    }

    #[test]
    fn rotate_secret_reads_the_grace_period() {
        let SubscriptionCommand::RotateSecret { id, grace } =
            parse(&["rotate-secret", "sub_1", "--grace", "1h"])
        else {
            panic!("not rotate-secret")
        };
        assert_eq!(id, "sub_1");
        assert_eq!(grace.unwrap().seconds, 3600);
    }

    #[test]
    fn send_test_requires_an_event_type() {
        assert!(Cli::try_parse_from(["s", "send-test", "sub_1"]).is_err());
        let SubscriptionCommand::SendTest { event_type, .. } =
            parse(&["send-test", "sub_1", "--event-type", "message.first_open"])
        else {
            panic!("not send-test")
        };
        assert_eq!(event_type, "message.first_open");
    }
}
