use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use hookplane_client::{
    Client,
    v1::{
        CreateForwardingSetRequest, DeleteForwardingSetRequest, ForwardingKind, ForwardingSet,
        GenesysSettings, GetForwardingSetRequest, ListForwardingSetsRequest,
        ListForwardingSetsResponse, UpdateForwardingSetRequest,
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

/// Where a channel's LINE webhooks are forwarded.
#[derive(Debug, Subcommand)]
pub enum ForwardingCommand {
    /// Add a forwarding target to a channel.
    Create(CreateArgs),
    /// List a channel's forwarding sets.
    List {
        #[arg(long)]
        channel: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one forwarding set.
    Get { id: String },
    /// Change the fields given; the others stay as they are.
    Update(UpdateArgs),
    /// Delete a forwarding set.
    Delete { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// The identical LINE request, same bytes and signature.
    Raw,
    /// Translated to Genesys Cloud Open Messaging.
    Genesys,
}

impl From<KindArg> for ForwardingKind {
    fn from(kind: KindArg) -> ForwardingKind {
        match kind {
            KindArg::Raw => ForwardingKind::Raw,
            KindArg::Genesys => ForwardingKind::GenesysOpenMessaging,
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub channel: String,
    #[arg(long)]
    pub name: String,
    /// The target URL (http or https); may be left out for --kind genesys.
    #[arg(long)]
    pub url: Option<String>,
    /// Per-attempt timeout, 1s to 60s (server default 10s).
    #[arg(long, value_parser = flag_values::duration)]
    pub timeout: Option<prost_types::Duration>,
    /// Create it switched off.
    #[arg(long)]
    pub disabled: bool,
    /// Default: genesys when any --genesys-* flag is given, else raw.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    #[command(flatten)]
    pub genesys: GenesysArgs,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    #[arg(long)]
    pub disable: bool,
    #[arg(long, value_parser = flag_values::duration)]
    pub timeout: Option<prost_types::Duration>,
    /// Any --genesys-* flag replaces the whole Genesys block, secrets included: give them all.
    #[command(flatten)]
    pub genesys: GenesysArgs,
}

#[derive(Debug, Args)]
pub struct GenesysArgs {
    /// Region domain such as mypurecloud.com.
    #[arg(long)]
    pub genesys_region: Option<String>,
    /// Overrides the login base URL derived from the region.
    #[arg(long)]
    pub genesys_login_url: Option<String>,
    /// Overrides the API base URL derived from the region.
    #[arg(long)]
    pub genesys_api_url: Option<String>,
    #[arg(long)]
    pub genesys_client_id: Option<String>,
    #[arg(long)]
    pub genesys_client_secret: Option<String>,
    #[arg(long)]
    pub genesys_integration_id: Option<String>,
    /// The secret token that signs Genesys's outbound messages (X-Hub-Signature-256).
    #[arg(long)]
    pub genesys_signature_secret: Option<String>,
    /// A custom attribute sent with every inbound message (repeatable).
    #[arg(long = "genesys-attribute", value_name = "KEY=VALUE", value_parser = flag_values::key_value)]
    pub genesys_attributes: Vec<(String, String)>,
}

impl GenesysArgs {
    fn settings(&self) -> Option<GenesysSettings> {
        let fields = [
            &self.genesys_region,
            &self.genesys_login_url,
            &self.genesys_api_url,
            &self.genesys_client_id,
            &self.genesys_client_secret,
            &self.genesys_integration_id,
            &self.genesys_signature_secret,
        ];
        if fields.iter().all(|f| f.is_none()) && self.genesys_attributes.is_empty() {
            return None;
        }
        let text = |f: &Option<String>| f.clone().unwrap_or_default();
        Some(GenesysSettings {
            region_domain: text(&self.genesys_region),
            login_base_url: text(&self.genesys_login_url),
            api_base_url: text(&self.genesys_api_url),
            client_id: text(&self.genesys_client_id),
            client_secret: text(&self.genesys_client_secret),
            integration_id: text(&self.genesys_integration_id),
            outbound_signature_secret: text(&self.genesys_signature_secret),
            custom_attributes: flag_values::key_values(&self.genesys_attributes),
        })
    }
}

pub fn create_request(args: &CreateArgs) -> anyhow::Result<CreateForwardingSetRequest> {
    let genesys = args.genesys.settings();
    let kind = match (args.kind, &genesys) {
        (Some(KindArg::Raw), Some(_)) => bail!("--genesys-* flags need --kind genesys"),
        (Some(kind), _) => kind,
        (None, Some(_)) => KindArg::Genesys,
        (None, None) => KindArg::Raw,
    };
    if kind == KindArg::Raw && args.url.is_none() {
        bail!("--url is required for a raw forwarding set");
    }
    Ok(CreateForwardingSetRequest {
        channel_id: args.channel.clone(),
        forwarding_set: Some(ForwardingSet {
            name: args.name.clone(),
            url: args.url.clone().unwrap_or_default(),
            enabled: Some(!args.disabled),
            kind: ForwardingKind::from(kind) as i32,
            timeout: args.timeout,
            genesys,
            ..ForwardingSet::default()
        }),
    })
}

pub fn update_request(args: &UpdateArgs) -> anyhow::Result<UpdateForwardingSetRequest> {
    let mut set = ForwardingSet {
        id: args.id.clone(),
        ..ForwardingSet::default()
    };
    let mut paths = Vec::new();
    if let Some(name) = &args.name {
        set.name = name.clone();
        paths.push("name");
    }
    if let Some(url) = &args.url {
        set.url = url.clone();
        paths.push("url");
    }
    if args.enable || args.disable {
        set.enabled = Some(args.enable);
        paths.push("enabled");
    }
    if let Some(timeout) = args.timeout {
        set.timeout = Some(timeout);
        paths.push("timeout");
    }
    if let Some(genesys) = args.genesys.settings() {
        set.genesys = Some(genesys);
        paths.push("genesys");
    }
    if paths.is_empty() {
        bail!(
            "nothing to update: give --name, --url, --enable, --disable, --timeout or --genesys-* flags"
        );
    }
    Ok(UpdateForwardingSetRequest {
        forwarding_set: Some(set),
        update_mask: Some(FieldMask {
            paths: paths.into_iter().map(str::to_owned).collect(),
        }),
    })
}

pub async fn run(command: ForwardingCommand, client: &Client) -> anyhow::Result<Printout> {
    let mut sets = client.forwarding();
    let one = |f: ForwardingSet| proto_json::to_value(&f).map(Printout::Resource);
    Ok(match command {
        ForwardingCommand::Create(args) => one(sets
            .create_forwarding_set(create_request(&args)?)
            .await?
            .into_inner())?,
        ForwardingCommand::List { channel, paging } => {
            let (items, next) = paging::collect(&paging, async |page_token| {
                let r = sets
                    .list_forwarding_sets(ListForwardingSetsRequest {
                        channel_id: channel.clone(),
                        page_size: paging.page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((r.forwarding_sets, r.next_page_token))
            })
            .await?;
            let table = table(&items);
            let response = ListForwardingSetsResponse {
                forwarding_sets: items,
                next_page_token: next.clone(),
            };
            Printout::List {
                json: proto_json::to_value(&response)?,
                table,
                next_page_token: next,
            }
        }
        ForwardingCommand::Get { id } => one(sets
            .get_forwarding_set(GetForwardingSetRequest { id })
            .await?
            .into_inner())?,
        ForwardingCommand::Update(args) => one(sets
            .update_forwarding_set(update_request(&args)?)
            .await?
            .into_inner())?,
        ForwardingCommand::Delete { id } => {
            sets.delete_forwarding_set(DeleteForwardingSetRequest { id: id.clone() })
                .await?;
            Printout::Deleted(id)
        }
    })
}

fn table(sets: &[ForwardingSet]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "KIND", "ENABLED", "TIMEOUT", "URL"]);
    for f in sets {
        let kind = match ForwardingKind::try_from(f.kind) {
            Ok(ForwardingKind::GenesysOpenMessaging) => "genesys",
            Ok(_) => "raw",
            Err(_) => "?",
        };
        table.row(vec![
            f.id.clone(),
            f.name.clone(),
            kind.to_owned(),
            if f.enabled.unwrap_or(true) {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            f.timeout.map(|t| t.to_string()).unwrap_or_default(),
            f.url.clone(),
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
        command: ForwardingCommand,
    }

    fn parse(args: &[&str]) -> ForwardingCommand {
        Cli::try_parse_from(std::iter::once("forwarding").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    fn create(args: &[&str]) -> anyhow::Result<ForwardingSet> {
        let mut all = vec!["create", "--channel", "ch_1", "--name", "crm"];
        all.extend_from_slice(args);
        let ForwardingCommand::Create(args) = parse(&all) else {
            panic!("not create")
        };
        Ok(create_request(&args)?.forwarding_set.unwrap())
    }

    #[test]
    fn create_defaults_to_an_enabled_raw_forward() {
        let f = create(&["--url", "https://crm.test/hook"]).unwrap();
        assert_eq!(f.url, "https://crm.test/hook");
        assert_eq!(f.kind, ForwardingKind::Raw as i32);
        assert_eq!(f.enabled, Some(true));
        assert!(f.timeout.is_none() && f.genesys.is_none());
    }

    #[test]
    fn create_disabled_with_a_timeout() {
        let f = create(&[
            "--url",
            "http://x.test",
            "--disabled",
            "--timeout",
            "2500ms",
        ])
        .unwrap();
        assert_eq!(f.enabled, Some(false));
        let t = f.timeout.unwrap();
        assert_eq!((t.seconds, t.nanos), (2, 500_000_000));
    }

    #[test]
    fn create_raw_requires_a_url() {
        assert!(create(&[]).is_err());
    }

    #[test]
    fn create_maps_genesys_flags_to_genesys_settings() {
        let f = create(&[
            "--kind",
            "genesys",
            "--genesys-region",
            "mypurecloud.com",
            "--genesys-client-id",
            "cid",
            "--genesys-client-secret",
            "csecret",
            "--genesys-integration-id",
            "iid",
            "--genesys-signature-secret",
            "ssecret",
            "--genesys-attribute",
            "brand=acme",
        ])
        .unwrap();
        assert_eq!(f.kind, ForwardingKind::GenesysOpenMessaging as i32);
        assert_eq!(f.url, "");
        let g = f.genesys.unwrap();
        assert_eq!(g.region_domain, "mypurecloud.com");
        assert_eq!(g.client_id, "cid");
        assert_eq!(g.client_secret, "csecret");
        assert_eq!(g.integration_id, "iid");
        assert_eq!(g.outbound_signature_secret, "ssecret");
        assert_eq!(g.custom_attributes["brand"], "acme");
    }

    #[test]
    fn create_with_genesys_flags_implies_the_genesys_kind() {
        let f = create(&["--genesys-integration-id", "iid"]).unwrap();
        assert_eq!(f.kind, ForwardingKind::GenesysOpenMessaging as i32);
    }

    #[test]
    fn create_refuses_genesys_flags_on_a_raw_kind() {
        assert!(
            create(&[
                "--kind",
                "raw",
                "--url",
                "http://x",
                "--genesys-client-id",
                "c"
            ])
            .is_err()
        );
    }

    #[test]
    fn update_enable_and_disable_set_the_enabled_path() {
        for (flag, expected) in [("--enable", true), ("--disable", false)] {
            let ForwardingCommand::Update(args) = parse(&["update", "fwd_1", flag]) else {
                panic!("not update")
            };
            let request = update_request(&args).unwrap();
            assert_eq!(request.update_mask.unwrap().paths, ["enabled"]);
            assert_eq!(request.forwarding_set.unwrap().enabled, Some(expected));
        }
    }

    #[test]
    fn update_refuses_enable_with_disable() {
        assert!(
            Cli::try_parse_from(["forwarding", "update", "fwd_1", "--enable", "--disable"])
                .is_err()
        );
    }

    #[test]
    fn update_masks_only_the_fields_given() {
        let ForwardingCommand::Update(args) = parse(&[
            "update",
            "fwd_1",
            "--url",
            "https://new.test",
            "--timeout",
            "5s",
        ]) else {
            panic!("not update")
        };
        let request = update_request(&args).unwrap();
        assert_eq!(request.update_mask.unwrap().paths, ["url", "timeout"]);
        let f = request.forwarding_set.unwrap();
        assert_eq!(f.id, "fwd_1");
        assert_eq!(f.enabled, None);
    }

    #[test]
    fn update_without_any_field_is_refused() {
        let ForwardingCommand::Update(args) = parse(&["update", "fwd_1"]) else {
            panic!("not update")
        };
        assert!(update_request(&args).is_err());
    }
}
