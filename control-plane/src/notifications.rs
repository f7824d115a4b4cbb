//! NotificationService: the emails the control plane sent (or would have sent), per tenant.

use hookplane_proto::v1::notification_service_server::NotificationService;
use hookplane_proto::v1::{ListNotificationsRequest, ListNotificationsResponse, Notification};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::caller::Caller;
use crate::error::Error;
use crate::pagination::Page;
use crate::store::{Store, index_prefix};
use crate::validate;

/// Notifications are kept under `tenant_id/ntf_id`, encoded as `hookplane.v1.Notification`.
pub(crate) struct NotificationApi {
    store: Store,
}

impl NotificationApi {
    pub fn new(store: Store) -> NotificationApi {
        NotificationApi { store }
    }

    fn list(
        &self,
        caller: &Caller,
        req: &ListNotificationsRequest,
    ) -> Result<ListNotificationsResponse, Error> {
        let tenant_id = validate::id("tenant_id", caller.listing_tenant(&req.tenant_id)?)?;
        let page = Page::new(req.page_size, &req.page_token, &index_prefix(tenant_id))?;
        self.store.tenant(tenant_id)?;
        let entries = page.read(self.store.notifications_tree())?;
        let notifications = entries
            .items
            .iter()
            .map(|(_, v)| {
                Notification::decode(v.as_ref()).map_err(|e| Error::Corrupt {
                    tree: "notifications",
                    detail: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ListNotificationsResponse {
            notifications,
            next_page_token: entries.next_page_token,
        })
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.list(&caller, request.get_ref())?))
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::NotificationState;
    use tonic::Code;

    use super::*;
    use crate::test_fixtures::*;

    #[tokio::test]
    async fn a_tenants_notifications_are_listed() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let other = create_tenant(&store, tenant_input()).await;
        for (tenant_id, id) in [(&tenant.id, "ntf_1"), (&other.id, "ntf_2")] {
            let n = Notification {
                id: id.into(),
                tenant_id: tenant_id.clone(),
                kind: "forward_failure".into(),
                state: NotificationState::Logged as i32,
                ..Default::default()
            };
            let mut key = index_prefix(tenant_id);
            key.extend_from_slice(id.as_bytes());
            store
                .notifications_tree()
                .insert(key, n.encode_to_vec())
                .unwrap();
        }
        let listed = NotificationApi::new(store.clone())
            .list_notifications(operator(ListNotificationsRequest {
                tenant_id: tenant.id,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<_> = listed.notifications.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["ntf_1"]);
    }

    #[tokio::test]
    async fn listing_notifications_of_an_unknown_tenant_is_not_found() {
        let (_dir, store) = store();
        let result = NotificationApi::new(store)
            .list_notifications(operator(ListNotificationsRequest {
                tenant_id: "tnt_x".into(),
                ..Default::default()
            }))
            .await;
        assert_status(result, Code::NotFound, "tenant \"tnt_x\" not found");
    }
}
