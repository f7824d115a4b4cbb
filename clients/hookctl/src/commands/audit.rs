//! `hookctl audit`: who changed what, and who revealed or rotated a secret, newest first.

use clap::Args;
use hookplane_client::{
    Client,
    v1::{AuditEvent, ListAuditEventsRequest, ListAuditEventsResponse},
};

use crate::{
    output::Printout,
    paging::{self, Paging},
    proto_json,
    table::Table,
};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this tenant's events.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Only the events of this resource (a tenant, channel, forwarding set, subscription,
    /// token or delivery id).
    #[arg(long, default_value = "")]
    pub resource: String,
    #[command(flatten)]
    pub paging: Paging,
}

pub async fn run(args: AuditArgs, client: &Client) -> anyhow::Result<Printout> {
    let mut audit = client.audit();
    let (items, next) = paging::collect(&args.paging, async |page_token| {
        let r = audit
            .list_audit_events(ListAuditEventsRequest {
                tenant_id: args.tenant.clone(),
                resource_id: args.resource.clone(),
                page_size: args.paging.page_size,
                page_token,
            })
            .await?
            .into_inner();
        Ok((r.events, r.next_page_token))
    })
    .await?;
    let table = table(&items);
    let response = ListAuditEventsResponse {
        events: items,
        next_page_token: next.clone(),
    };
    Ok(Printout::List {
        json: proto_json::to_value(&response)?,
        table,
        next_page_token: next,
    })
}

fn table(events: &[AuditEvent]) -> Table {
    let mut table = Table::new(&["TIME", "WHO", "METHOD", "RESOURCE", "FIELDS", "PEER"]);
    for e in events {
        let who = if e.token_id.is_empty() {
            e.token_name.clone()
        } else {
            format!("{} ({})", e.token_name, e.token_id)
        };
        // The service is the same for every call of a resource kind; the method says enough.
        let method = e.method.rsplit('/').next().unwrap_or(&e.method);
        table.row(vec![
            e.time.map(|t| t.to_string()).unwrap_or_default(),
            who,
            method.to_owned(),
            e.resource_id.clone(),
            e.fields.join(","),
            e.peer.clone(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_who_by_name_and_id_and_the_method_alone() {
        let e = AuditEvent {
            token_id: "tok_1".into(),
            token_name: "console".into(),
            method: "hookplane.v1.ChannelService/UpdateChannel".into(),
            resource_id: "ch_1".into(),
            fields: vec!["display_name".into(), "metadata".into()],
            peer: "127.0.0.1:5000".into(),
            ..AuditEvent::default()
        };
        let text = table(&[e]).render();
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("console (tok_1)"), "{row}");
        assert!(row.contains(" UpdateChannel "), "{row}");
        assert!(row.contains("display_name,metadata"), "{row}");
    }
}
