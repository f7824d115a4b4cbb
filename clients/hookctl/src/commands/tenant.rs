use anyhow::bail;
use clap::{Args, Subcommand};
use hookplane_client::{
    Client,
    v1::{
        CreateTenantRequest, DeleteTenantRequest, Entitlements, GetTenantRequest,
        ListTenantsRequest, ListTenantsResponse, PurgeTenantDataRequest, Tenant,
        UpdateTenantRequest, Zone, ZoneEntitlement,
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

/// Brands served by the operator.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create(CreateArgs),
    /// List tenants.
    List(Paging),
    /// Show one tenant.
    Get { id: String },
    /// Change the fields given; the others stay as they are.
    Update(UpdateArgs),
    /// Delete a tenant with its channels, forwarding sets and subscriptions.
    Delete { id: String },
    /// Erase the tenant's traffic now (an erasure request): its attempt log, and on every node
    /// its queued and parked deliveries with their message bodies. Cannot be undone.
    Purge(PurgeArgs),
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    pub id: String,
    /// Confirms the purge: queued deliveries are dropped undelivered and nothing comes back.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: String,
    /// Who receives failure reminders (repeatable).
    #[arg(long = "email")]
    pub emails: Vec<String>,
    #[command(flatten)]
    pub entitlements: EntitlementArgs,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    /// Replaces the whole list of reminder recipients (repeatable).
    #[arg(long = "email")]
    pub emails: Vec<String>,
    #[command(flatten)]
    pub entitlements: EntitlementArgs,
}

#[derive(Debug, Args)]
pub struct EntitlementArgs {
    /// A zone bought until an instant, such as ZONE_1=2027-12-31T00:00:00Z (repeatable; on
    /// update the zones given replace all zones).
    #[arg(long = "zone", value_name = "ZONE=INSTANT", value_parser = flag_values::zone_entitlement)]
    pub zones: Vec<ZoneEntitlement>,
    /// Subscriptions that may be active at once (server default 3).
    #[arg(long)]
    pub max_active_subscriptions: Option<u32>,
    /// Forwarding sets per channel (server default 10).
    #[arg(long)]
    pub max_forwarding_sets: Option<u32>,
}

impl EntitlementArgs {
    fn any(&self) -> bool {
        !self.zones.is_empty()
            || self.max_active_subscriptions.is_some()
            || self.max_forwarding_sets.is_some()
    }

    /// The entitlements with the flags given laid over `current`.
    fn over(&self, current: Option<&Entitlements>) -> Entitlements {
        let mut merged = current.cloned().unwrap_or_default();
        if !self.zones.is_empty() {
            merged.zones = self.zones.clone();
        }
        if let Some(n) = self.max_active_subscriptions {
            merged.max_active_subscriptions = Some(n);
        }
        if let Some(n) = self.max_forwarding_sets {
            merged.max_forwarding_sets_per_channel = Some(n);
        }
        merged
    }
}

pub fn create_request(args: &CreateArgs) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(Tenant {
            display_name: args.name.clone(),
            notification_emails: args.emails.clone(),
            entitlements: args
                .entitlements
                .any()
                .then(|| args.entitlements.over(None)),
            ..Tenant::default()
        }),
    }
}

/// Entitlements travel as one field, so changing one part needs the tenant's current value to
/// keep the rest.
pub fn needs_current(args: &UpdateArgs) -> bool {
    args.entitlements.any()
}

pub fn update_request(
    args: &UpdateArgs,
    current: Option<&Entitlements>,
) -> anyhow::Result<UpdateTenantRequest> {
    let mut tenant = Tenant {
        id: args.id.clone(),
        ..Tenant::default()
    };
    let mut paths = Vec::new();
    if let Some(name) = &args.name {
        tenant.display_name = name.clone();
        paths.push("display_name");
    }
    if !args.emails.is_empty() {
        tenant.notification_emails = args.emails.clone();
        paths.push("notification_emails");
    }
    if args.entitlements.any() {
        tenant.entitlements = Some(args.entitlements.over(current));
        paths.push("entitlements");
    }
    if paths.is_empty() {
        // An empty mask would mean "every field" to the server and blank the tenant.
        bail!(
            "nothing to update: give --name, --email, --zone, --max-active-subscriptions or --max-forwarding-sets"
        );
    }
    Ok(UpdateTenantRequest {
        tenant: Some(tenant),
        update_mask: Some(FieldMask {
            paths: paths.into_iter().map(str::to_owned).collect(),
        }),
    })
}

pub async fn run(command: TenantCommand, client: &Client) -> anyhow::Result<Printout> {
    let mut tenants = client.tenants();
    let one = |t: Tenant| proto_json::to_value(&t).map(Printout::Resource);
    Ok(match command {
        TenantCommand::Create(args) => one(tenants
            .create_tenant(create_request(&args))
            .await?
            .into_inner())?,
        TenantCommand::List(paging) => {
            let (items, next) = paging::collect(&paging, async |page_token| {
                let r = tenants
                    .list_tenants(ListTenantsRequest {
                        page_size: paging.page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((r.tenants, r.next_page_token))
            })
            .await?;
            let table = table(&items);
            let response = ListTenantsResponse {
                tenants: items,
                next_page_token: next.clone(),
            };
            Printout::List {
                json: proto_json::to_value(&response)?,
                table,
                next_page_token: next,
            }
        }
        TenantCommand::Get { id } => one(tenants
            .get_tenant(GetTenantRequest { id })
            .await?
            .into_inner())?,
        TenantCommand::Update(args) => {
            let current = if needs_current(&args) {
                let id = args.id.clone();
                tenants
                    .get_tenant(GetTenantRequest { id })
                    .await?
                    .into_inner()
                    .entitlements
            } else {
                None
            };
            let request = update_request(&args, current.as_ref())?;
            one(tenants.update_tenant(request).await?.into_inner())?
        }
        TenantCommand::Delete { id } => {
            tenants
                .delete_tenant(DeleteTenantRequest { id: id.clone() })
                .await?;
            Printout::Deleted(id)
        }
        TenantCommand::Purge(args) => {
            if !args.yes {
                bail!(
                    "purging {} drops its queued and parked deliveries undelivered and erases its \
                     attempt log, for good: run again with --yes to do it",
                    args.id
                );
            }
            let purged = tenants
                .purge_tenant_data(PurgeTenantDataRequest { tenant_id: args.id })
                .await?
                .into_inner();
            Printout::Resource(proto_json::to_value(&purged)?)
        }
    })
}

fn table(tenants: &[Tenant]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "EMAILS", "ZONES", "CREATED"]);
    for t in tenants {
        let zones: Vec<String> = t
            .entitlements
            .iter()
            .flat_map(|e| &e.zones)
            .map(|z| {
                let zone = Zone::try_from(z.zone).map_or("?", |z| z.as_str_name());
                match &z.valid_until {
                    Some(until) => format!("{zone} until {until}"),
                    None => zone.to_owned(),
                }
            })
            .collect();
        table.row(vec![
            t.id.clone(),
            t.display_name.clone(),
            t.notification_emails.join(","),
            zones.join(", "),
            t.create_time.map(|c| c.to_string()).unwrap_or_default(),
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
        command: TenantCommand,
    }

    fn parse(args: &[&str]) -> TenantCommand {
        Cli::try_parse_from(std::iter::once("tenant").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    fn mask(request: &UpdateTenantRequest) -> Vec<&str> {
        request
            .update_mask
            .as_ref()
            .unwrap()
            .paths
            .iter()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn create_maps_every_flag_into_the_tenant() {
        let TenantCommand::Create(args) = parse(&[
            "create",
            "--name",
            "Acme",
            "--email",
            "a@acme.test",
            "--email",
            "b@acme.test",
            "--zone",
            "ZONE_1=2027-12-31T00:00:00Z",
            "--max-active-subscriptions",
            "5",
            "--max-forwarding-sets",
            "4",
        ]) else {
            panic!("not create")
        };
        let tenant = create_request(&args).tenant.unwrap();
        assert_eq!(tenant.display_name, "Acme");
        assert_eq!(tenant.notification_emails, ["a@acme.test", "b@acme.test"]);
        let e = tenant.entitlements.unwrap();
        assert_eq!(e.zones.len(), 1);
        assert_eq!(e.zones[0].zone, Zone::Zone1 as i32);
        assert_eq!(e.zones[0].valid_until.unwrap().seconds, 1_830_211_200);
        assert_eq!(e.max_active_subscriptions, Some(5));
        assert_eq!(e.max_forwarding_sets_per_channel, Some(4));
    }

    #[test]
    fn create_without_entitlement_flags_leaves_them_to_the_server() {
        let TenantCommand::Create(args) = parse(&["create", "--name", "Acme"]) else {
            panic!("not create")
        };
        assert!(create_request(&args).tenant.unwrap().entitlements.is_none());
    }

    #[test]
    fn create_refuses_a_malformed_zone() {
        let result = Cli::try_parse_from(["tenant", "create", "--name", "A", "--zone", "ZONE_1"]);
        assert!(result.is_err());
    }

    #[test]
    fn update_masks_only_the_fields_given() {
        let TenantCommand::Update(args) = parse(&["update", "tnt_1", "--name", "New"]) else {
            panic!("not update")
        };
        assert!(!needs_current(&args));
        let request = update_request(&args, None).unwrap();
        assert_eq!(mask(&request), ["display_name"]);
        let tenant = request.tenant.unwrap();
        assert_eq!(
            (tenant.id.as_str(), tenant.display_name.as_str()),
            ("tnt_1", "New")
        );
    }

    #[test]
    fn update_with_emails_masks_the_email_list() {
        let TenantCommand::Update(args) = parse(&["update", "tnt_1", "--email", "x@y.test"]) else {
            panic!("not update")
        };
        let request = update_request(&args, None).unwrap();
        assert_eq!(mask(&request), ["notification_emails"]);
    }

    #[test]
    fn update_of_one_limit_keeps_the_current_zones_and_other_limit() {
        let TenantCommand::Update(args) =
            parse(&["update", "tnt_1", "--max-active-subscriptions", "9"])
        else {
            panic!("not update")
        };
        assert!(needs_current(&args));
        let current = Entitlements {
            zones: vec![ZoneEntitlement {
                zone: 2,
                valid_until: None,
            }],
            max_active_subscriptions: Some(3),
            max_forwarding_sets_per_channel: Some(7),
        };
        let request = update_request(&args, Some(&current)).unwrap();
        assert_eq!(mask(&request), ["entitlements"]);
        let e = request.tenant.unwrap().entitlements.unwrap();
        assert_eq!(e.zones, current.zones);
        assert_eq!(e.max_active_subscriptions, Some(9));
        assert_eq!(e.max_forwarding_sets_per_channel, Some(7));
    }

    #[test]
    fn update_zones_replace_all_current_zones() {
        let TenantCommand::Update(args) =
            parse(&["update", "tnt_1", "--zone", "ZONE_2=2028-01-01"])
        else {
            panic!("not update")
        };
        let current = Entitlements {
            zones: vec![ZoneEntitlement {
                zone: 1,
                valid_until: None,
            }],
            ..Entitlements::default()
        };
        let e = update_request(&args, Some(&current))
            .unwrap()
            .tenant
            .unwrap()
            .entitlements
            .unwrap();
        assert_eq!(e.zones.len(), 1);
        assert_eq!(e.zones[0].zone, Zone::Zone2 as i32);
    }

    #[test]
    fn update_without_any_field_is_refused() {
        let TenantCommand::Update(args) = parse(&["update", "tnt_1"]) else {
            panic!("not update")
        };
        assert!(update_request(&args, None).is_err());
    }

    #[test]
    fn list_shows_zones_with_their_end() {
        let t = Tenant {
            id: "tnt_1".into(),
            display_name: "Acme".into(),
            entitlements: Some(Entitlements {
                zones: vec![ZoneEntitlement {
                    zone: 1,
                    valid_until: Some(flag_values::timestamp("2027-12-31").unwrap()),
                }],
                ..Entitlements::default()
            }),
            ..Tenant::default()
        };
        let text = table(&[t]).render();
        assert!(text.contains("ZONE_1 until 2027-12-31T00:00:00Z"), "{text}");
    }
}
