use clap::Args;
use hookplane_client::{
    Client,
    v1::{ListNotificationsRequest, ListNotificationsResponse, Notification, NotificationState},
};

use crate::{
    output::Printout,
    paging::{self, Paging},
    proto_json,
    table::Table,
};

#[derive(Debug, Args)]
pub struct NotificationsArgs {
    #[arg(long)]
    pub tenant: String,
    #[command(flatten)]
    pub paging: Paging,
}

pub async fn run(args: NotificationsArgs, client: &Client) -> anyhow::Result<Printout> {
    let mut notifications = client.notifications();
    let (items, next) = paging::collect(&args.paging, async |page_token| {
        let r = notifications
            .list_notifications(ListNotificationsRequest {
                tenant_id: args.tenant.clone(),
                page_size: args.paging.page_size,
                page_token,
            })
            .await?
            .into_inner();
        Ok((r.notifications, r.next_page_token))
    })
    .await?;
    let table = table(&items);
    let response = ListNotificationsResponse {
        notifications: items,
        next_page_token: next.clone(),
    };
    Ok(Printout::List {
        json: proto_json::to_value(&response)?,
        table,
        next_page_token: next,
    })
}

fn table(notifications: &[Notification]) -> Table {
    let mut table = Table::new(&["ID", "KIND", "STATE", "CREATED", "RECIPIENTS", "SUBJECT"]);
    for n in notifications {
        let state = NotificationState::try_from(n.state).map_or("?", |s| s.as_str_name());
        table.row(vec![
            n.id.clone(),
            n.kind.clone(),
            state.to_owned(),
            n.create_time.map(|t| t.to_string()).unwrap_or_default(),
            n.recipients.join(","),
            n.subject.clone(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_state_names_and_all_recipients() {
        let n = Notification {
            id: "ntf_1".into(),
            kind: "forward_failure".into(),
            state: NotificationState::Logged as i32,
            recipients: vec!["a@x.test".into(), "b@x.test".into()],
            subject: "[System Notification] Acme -- LINE Webhook Forward Failure Reminder".into(),
            ..Notification::default()
        };
        let text = table(&[n]).render();
        let row = text.lines().nth(1).unwrap();
        assert!(
            row.contains("LOGGED") && row.contains("a@x.test,b@x.test"),
            "{row}"
        );
    }
}
