use anyhow::bail;
use clap::{Args, Subcommand};
use hookplane_client::{
    Client,
    v1::{
        Channel, CreateChannelRequest, DeleteChannelRequest, GetChannelRequest,
        ListChannelsRequest, ListChannelsResponse, RotateChannelSecretRequest,
        UpdateChannelRequest,
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

/// LINE official accounts (Messaging API channels) of a tenant.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Register a LINE channel; prints the ingress path to give LINE as webhook URL.
    Create(CreateArgs),
    /// List a tenant's channels.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one channel.
    Get { id: String },
    /// Change the fields given; the others stay as they are.
    Update(UpdateArgs),
    /// Delete a channel with its forwarding sets.
    Delete { id: String },
    /// Replace the channel secret; the old one keeps verifying during the grace period.
    RotateSecret(RotateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub tenant: String,
    /// The official account's name, used in failure reminders.
    #[arg(long)]
    pub name: String,
    /// The LINE channel secret.
    #[arg(long)]
    pub secret: String,
    /// The LINE channel access token, for connectors that push messages.
    #[arg(long)]
    pub access_token: Option<String>,
    /// A label passed on by connectors (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = flag_values::key_value)]
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    /// A new channel secret, effective at once (see rotate-secret for a grace period).
    #[arg(long)]
    pub secret: Option<String>,
    #[arg(long)]
    pub access_token: Option<String>,
    /// Replaces all labels (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = flag_values::key_value)]
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    pub id: String,
    #[arg(long)]
    pub new_secret: String,
    /// How long the old secret keeps verifying, such as 1h (at most 7 days; default 0).
    #[arg(long, value_parser = flag_values::duration)]
    pub grace: Option<prost_types::Duration>,
}

pub fn create_request(args: &CreateArgs) -> CreateChannelRequest {
    CreateChannelRequest {
        tenant_id: args.tenant.clone(),
        channel: Some(Channel {
            display_name: args.name.clone(),
            line_channel_secret: args.secret.clone(),
            line_channel_access_token: args.access_token.clone().unwrap_or_default(),
            metadata: flag_values::key_values(&args.metadata),
            ..Channel::default()
        }),
    }
}

pub fn update_request(args: &UpdateArgs) -> anyhow::Result<UpdateChannelRequest> {
    let mut channel = Channel {
        id: args.id.clone(),
        ..Channel::default()
    };
    let mut paths = Vec::new();
    if let Some(name) = &args.name {
        channel.display_name = name.clone();
        paths.push("display_name");
    }
    if let Some(secret) = &args.secret {
        channel.line_channel_secret = secret.clone();
        paths.push("line_channel_secret");
    }
    if let Some(token) = &args.access_token {
        channel.line_channel_access_token = token.clone();
        paths.push("line_channel_access_token");
    }
    if !args.metadata.is_empty() {
        channel.metadata = flag_values::key_values(&args.metadata);
        paths.push("metadata");
    }
    if paths.is_empty() {
        bail!("nothing to update: give --name, --secret, --access-token or --metadata");
    }
    Ok(UpdateChannelRequest {
        channel: Some(channel),
        update_mask: Some(FieldMask {
            paths: paths.into_iter().map(str::to_owned).collect(),
        }),
    })
}

pub fn rotate_request(args: &RotateArgs) -> RotateChannelSecretRequest {
    RotateChannelSecretRequest {
        id: args.id.clone(),
        new_secret: args.new_secret.clone(),
        grace_period: args.grace,
    }
}

pub async fn run(command: ChannelCommand, client: &Client) -> anyhow::Result<Printout> {
    let mut channels = client.channels();
    let one = |c: Channel| proto_json::to_value(&c).map(Printout::Resource);
    Ok(match command {
        ChannelCommand::Create(args) => one(channels
            .create_channel(create_request(&args))
            .await?
            .into_inner())?,
        ChannelCommand::List { tenant, paging } => {
            let (items, next) = paging::collect(&paging, async |page_token| {
                let r = channels
                    .list_channels(ListChannelsRequest {
                        tenant_id: tenant.clone(),
                        page_size: paging.page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((r.channels, r.next_page_token))
            })
            .await?;
            let table = table(&items);
            let response = ListChannelsResponse {
                channels: items,
                next_page_token: next.clone(),
            };
            Printout::List {
                json: proto_json::to_value(&response)?,
                table,
                next_page_token: next,
            }
        }
        ChannelCommand::Get { id } => one(channels
            .get_channel(GetChannelRequest { id })
            .await?
            .into_inner())?,
        ChannelCommand::Update(args) => one(channels
            .update_channel(update_request(&args)?)
            .await?
            .into_inner())?,
        ChannelCommand::Delete { id } => {
            channels
                .delete_channel(DeleteChannelRequest { id: id.clone() })
                .await?;
            Printout::Deleted(id)
        }
        ChannelCommand::RotateSecret(args) => one(channels
            .rotate_channel_secret(rotate_request(&args))
            .await?
            .into_inner())?,
    })
}

fn table(channels: &[Channel]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "INGRESS PATH", "ACCESS TOKEN", "CREATED"]);
    for c in channels {
        table.row(vec![
            c.id.clone(),
            c.display_name.clone(),
            c.ingress_path.clone(),
            if c.has_access_token { "yes" } else { "no" }.to_owned(),
            c.create_time.map(|t| t.to_string()).unwrap_or_default(),
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
        command: ChannelCommand,
    }

    fn parse(args: &[&str]) -> ChannelCommand {
        Cli::try_parse_from(std::iter::once("channel").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn create_maps_every_flag_into_the_channel() {
        let ChannelCommand::Create(args) = parse(&[
            "create",
            "--tenant",
            "tnt_1",
            "--name",
            "Acme OA",
            "--secret",
            "0123456789abcdef0123456789abcdef",
            "--access-token",
            "tok",
            "--metadata",
            "team=crm",
            "--metadata",
            "tier=gold",
        ]) else {
            panic!("not create")
        };
        let request = create_request(&args);
        assert_eq!(request.tenant_id, "tnt_1");
        let c = request.channel.unwrap();
        assert_eq!(c.display_name, "Acme OA");
        assert_eq!(c.line_channel_secret, "0123456789abcdef0123456789abcdef");
        assert_eq!(c.line_channel_access_token, "tok");
        assert_eq!(c.metadata.len(), 2);
        assert_eq!(c.metadata["tier"], "gold");
    }

    #[test]
    fn create_requires_a_secret() {
        assert!(
            Cli::try_parse_from(["channel", "create", "--tenant", "t", "--name", "n"]).is_err()
        );
    }

    #[test]
    fn update_masks_only_the_fields_given() {
        let ChannelCommand::Update(args) = parse(&[
            "update",
            "ch_1",
            "--access-token",
            "new",
            "--metadata",
            "a=b",
        ]) else {
            panic!("not update")
        };
        let request = update_request(&args).unwrap();
        assert_eq!(
            request.update_mask.unwrap().paths,
            ["line_channel_access_token", "metadata"]
        );
        let c = request.channel.unwrap();
        assert_eq!(c.id, "ch_1");
        assert_eq!(c.line_channel_access_token, "new");
    }

    #[test]
    fn update_without_any_field_is_refused() {
        let ChannelCommand::Update(args) = parse(&["update", "ch_1"]) else {
            panic!("not update")
        };
        assert!(update_request(&args).is_err());
    }

    #[test]
    fn rotate_secret_carries_the_grace_period() {
        let ChannelCommand::RotateSecret(args) = parse(&[
            "rotate-secret",
            "ch_1",
            "--new-secret",
            "s2",
            "--grace",
            "1h",
        ]) else {
            panic!("not rotate-secret")
        };
        let request = rotate_request(&args);
        assert_eq!(request.new_secret, "s2");
        assert_eq!(request.grace_period.unwrap().seconds, 3600);
    }

    #[test]
    fn rotate_secret_without_grace_leaves_it_unset() {
        let ChannelCommand::RotateSecret(args) =
            parse(&["rotate-secret", "ch_1", "--new-secret", "s2"])
        else {
            panic!("not rotate-secret")
        };
        assert!(rotate_request(&args).grace_period.is_none());
    }
}
