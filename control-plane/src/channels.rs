//! ChannelService: a tenant's LINE channels, their sealed secrets and secret rotation.

use std::collections::{BTreeMap, HashMap};

use hookplane_proto::v1::channel_service_server::{self, ChannelService};
use hookplane_proto::v1::{
    Channel, CreateChannelRequest, DeleteChannelRequest, GetChannelRequest, ListChannelsRequest,
    ListChannelsResponse, RotateChannelSecretRequest, UpdateChannelRequest,
};
use tonic::{Request, Response, Status};

use crate::audit::AuditLog;
use crate::caller::Caller;
use crate::clock::Time;
use crate::error::Error;
use crate::ids;
use crate::pagination::Page;
use crate::sealing::Place;
use crate::store::{
    Change, ChannelRecord, Index, PreviousSecret, Store, child_id_of, index_prefix, sealed_field,
};
use crate::validate;

const UPDATE_PATHS: &[&str] = &[
    "display_name",
    "line_channel_secret",
    "line_channel_access_token",
    "metadata",
];
const MAX_SECRET_CHARS: usize = 256;
const MAX_ACCESS_TOKEN_CHARS: usize = 2048;
const MAX_METADATA_KEY_CHARS: usize = 256;
const MAX_METADATA_VALUE_CHARS: usize = 2048;

pub(crate) struct ChannelApi {
    store: Store,
    audit: AuditLog,
}

/// The fields of `input` that are set, by name.
fn given_fields(input: &Channel) -> Vec<&'static str> {
    let mut set = Vec::new();
    if !input.display_name.is_empty() {
        set.push("display_name");
    }
    if !input.line_channel_secret.is_empty() {
        set.push("line_channel_secret");
    }
    if !input.line_channel_access_token.is_empty() {
        set.push("line_channel_access_token");
    }
    if !input.metadata.is_empty() {
        set.push("metadata");
    }
    set
}

fn method(name: &str) -> String {
    format!("{}/{name}", channel_service_server::SERVICE_NAME)
}

impl ChannelApi {
    pub fn new(store: Store) -> ChannelApi {
        ChannelApi {
            audit: AuditLog::new(&store),
            store,
        }
    }

    fn create(&self, caller: &Caller, req: CreateChannelRequest) -> Result<Channel, Error> {
        let tenant_id = validate::id("tenant_id", &req.tenant_id)?;
        caller.check_tenant(tenant_id)?;
        let input = validate::present("channel", req.channel.as_ref())?;
        validate::secret(
            "channel.line_channel_secret",
            &input.line_channel_secret,
            MAX_SECRET_CHARS,
        )?;
        let now = Time::now();
        let id = ids::new_id(ids::CHANNEL);
        let secret = self.store.sealer().seal(
            &input.line_channel_secret,
            Place::new(&id, sealed_field::SECRET),
        );
        let mut record = ChannelRecord {
            id,
            tenant_id: tenant_id.to_owned(),
            display_name: String::new(),
            secret,
            previous_secret: None,
            access_token: None,
            metadata: BTreeMap::new(),
            create_time: now,
            update_time: now,
        };
        let mut paths = vec!["display_name", "metadata"];
        if !input.line_channel_access_token.is_empty() {
            paths.push("line_channel_access_token");
        }
        let paths: Vec<String> = paths.into_iter().map(str::to_owned).collect();
        self.apply(&mut record, input, &paths)?;
        let guard = self.store.lock_writes();
        self.store.tenant(tenant_id)?;
        let mut change = Change::default();
        change.put_channel(&record);
        self.store.commit(&guard, change)?;
        Ok(to_proto(&record))
    }

    /// Returns the channel and the paths it changed.
    fn update(
        &self,
        caller: &Caller,
        req: UpdateChannelRequest,
    ) -> Result<(Channel, Vec<String>), Error> {
        let input = validate::present("channel", req.channel.as_ref())?;
        let id = validate::id("channel.id", &input.id)?;
        let paths = validate::update_paths(req.update_mask.as_ref(), UPDATE_PATHS, || {
            given_fields(input)
        })?;
        let guard = self.store.lock_writes();
        let mut record = self.store.channel(id)?;
        caller.check_tenant(&record.tenant_id)?;
        self.apply(&mut record, input, &paths)?;
        record.update_time = Time::now();
        let mut change = Change::default();
        change.put_channel(&record);
        self.store.commit(&guard, change)?;
        Ok((to_proto(&record), paths))
    }

    /// Copies the fields named by `paths` from `input` into `record`, validating and sealing.
    fn apply(
        &self,
        record: &mut ChannelRecord,
        input: &Channel,
        paths: &[String],
    ) -> Result<(), Error> {
        let sealer = self.store.sealer();
        for path in paths {
            match path.as_str() {
                "display_name" => {
                    record.display_name =
                        validate::name("channel.display_name", &input.display_name)?;
                }
                "line_channel_secret" => {
                    validate::secret(
                        "channel.line_channel_secret",
                        &input.line_channel_secret,
                        MAX_SECRET_CHARS,
                    )?;
                    // A plain update replaces the secret outright; RotateChannelSecret is the way
                    // to keep the old one working for a while.
                    record.secret = sealer.seal(
                        &input.line_channel_secret,
                        Place::new(&record.id, sealed_field::SECRET),
                    );
                    record.previous_secret = None;
                }
                "line_channel_access_token" => {
                    record.access_token = if input.line_channel_access_token.is_empty() {
                        None
                    } else {
                        validate::secret(
                            "channel.line_channel_access_token",
                            &input.line_channel_access_token,
                            MAX_ACCESS_TOKEN_CHARS,
                        )?;
                        Some(sealer.seal(
                            &input.line_channel_access_token,
                            Place::new(&record.id, sealed_field::ACCESS_TOKEN),
                        ))
                    };
                }
                "metadata" => record.metadata = metadata("channel.metadata", &input.metadata)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn rotate_secret(
        &self,
        caller: &Caller,
        req: RotateChannelSecretRequest,
    ) -> Result<Channel, Error> {
        let id = validate::id("id", &req.id)?;
        validate::secret("new_secret", &req.new_secret, MAX_SECRET_CHARS)?;
        let grace = validate::grace_period("grace_period", req.grace_period.as_ref())?;
        let guard = self.store.lock_writes();
        let mut record = self.store.channel(id)?;
        caller.check_tenant(&record.tenant_id)?;
        let now = Time::now();
        let sealer = self.store.sealer();
        let current = Place::new(&record.id, sealed_field::SECRET);
        // Each value is bound to its field: the current secret is sealed again as the previous.
        record.previous_secret = if grace.is_zero() {
            None
        } else {
            Some(PreviousSecret {
                secret: sealer.reseal(
                    &record.secret,
                    current,
                    Place::new(&record.id, sealed_field::PREVIOUS_SECRET),
                )?,
                valid_until: now.plus(grace),
            })
        };
        record.secret = sealer.seal(&req.new_secret, current);
        record.update_time = now;
        let mut change = Change::default();
        change.put_channel(&record);
        self.store.commit(&guard, change)?;
        Ok(to_proto(&record))
    }

    /// Removes the channel with its forwarding sets, in one revision.
    /// Returns the tenant the channel belonged to.
    fn delete(&self, caller: &Caller, id: &str) -> Result<String, Error> {
        let guard = self.store.lock_writes();
        let record = self.store.channel(id)?;
        caller.check_tenant(&record.tenant_id)?;
        let mut change = Change::default();
        for fwd_id in self.store.child_ids(Index::ChannelForwardingSets, id)? {
            change.remove_forwarding_set(id, &fwd_id);
        }
        change.remove_channel(&record.tenant_id, id);
        self.store.commit(&guard, change)?;
        Ok(record.tenant_id)
    }

    fn get(&self, caller: &Caller, id: &str) -> Result<Channel, Error> {
        let record = self.store.channel(id)?;
        caller.check_tenant(&record.tenant_id)?;
        Ok(to_proto(&record))
    }

    fn list(
        &self,
        caller: &Caller,
        req: &ListChannelsRequest,
    ) -> Result<ListChannelsResponse, Error> {
        let tenant_id = validate::id("tenant_id", caller.listing_tenant(&req.tenant_id)?)?;
        let prefix = index_prefix(tenant_id);
        let page = Page::new(req.page_size, &req.page_token, &prefix)?;
        self.store.tenant(tenant_id)?;
        let entries = page.read(self.store.index_tree(Index::TenantChannels))?;
        let mut channels = Vec::with_capacity(entries.items.len());
        for (key, _) in &entries.items {
            // A channel deleted between the index read and this one is simply left out.
            if let Some(record) = self.store.find_channel(&child_id_of(key, prefix.len()))? {
                channels.push(to_proto(&record));
            }
        }
        Ok(ListChannelsResponse {
            channels,
            next_page_token: entries.next_page_token,
        })
    }
}

/// Free-form labels: keys non-empty, keys and values of bounded length.
pub(crate) fn metadata(
    field: &str,
    input: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>, Error> {
    for (key, value) in input {
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(Error::invalid(
                field,
                format!("keys must have 1 to {MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(Error::invalid(
                format!("{field}[{key:?}]"),
                format!("must be at most {MAX_METADATA_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(input.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

pub(crate) fn ingress_path(id: &str) -> String {
    format!("/api/webhook/line/{id}/events")
}

/// The channel as returned: secrets never leave, only whether a token is stored.
pub(crate) fn to_proto(r: &ChannelRecord) -> Channel {
    let now = Time::now();
    Channel {
        id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        display_name: r.display_name.clone(),
        line_channel_secret: String::new(),
        line_channel_access_token: String::new(),
        ingress_path: ingress_path(&r.id),
        metadata: r
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        create_time: Some(r.create_time.to_proto()),
        update_time: Some(r.update_time.to_proto()),
        has_access_token: r.access_token.is_some(),
        previous_secret_valid_until: r
            .previous_secret
            .as_ref()
            .filter(|p| p.still_valid(now))
            .map(|p| p.valid_until.to_proto()),
    }
}

#[tonic::async_trait]
impl ChannelService for ChannelApi {
    async fn create_channel(
        &self,
        request: Request<CreateChannelRequest>,
    ) -> Result<Response<Channel>, Status> {
        let caller = Caller::of(&request)?;
        let fields = request
            .get_ref()
            .channel
            .as_ref()
            .map(given_fields)
            .unwrap_or_default();
        let channel = self.create(&caller, request.into_inner())?;
        self.audit.record(
            &caller,
            &method("CreateChannel"),
            &channel.tenant_id,
            &channel.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(channel))
    }

    async fn get_channel(
        &self,
        request: Request<GetChannelRequest>,
    ) -> Result<Response<Channel>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        Ok(Response::new(self.get(&caller, id)?))
    }

    async fn list_channels(
        &self,
        request: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.list(&caller, request.get_ref())?))
    }

    async fn update_channel(
        &self,
        request: Request<UpdateChannelRequest>,
    ) -> Result<Response<Channel>, Status> {
        let caller = Caller::of(&request)?;
        let (channel, paths) = self.update(&caller, request.into_inner())?;
        let fields: Vec<&str> = paths.iter().map(String::as_str).collect();
        self.audit.record(
            &caller,
            &method("UpdateChannel"),
            &channel.tenant_id,
            &channel.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(channel))
    }

    async fn delete_channel(
        &self,
        request: Request<DeleteChannelRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        let tenant_id = self.delete(&caller, id)?;
        self.audit
            .record(&caller, &method("DeleteChannel"), &tenant_id, id, &[])?;
        self.store.flush().await?;
        Ok(Response::new(()))
    }

    async fn rotate_channel_secret(
        &self,
        request: Request<RotateChannelSecretRequest>,
    ) -> Result<Response<Channel>, Status> {
        let caller = Caller::of(&request)?;
        let channel = self.rotate_secret(&caller, request.into_inner())?;
        let mut fields = vec!["line_channel_secret"];
        if channel.previous_secret_valid_until.is_some() {
            fields.push("grace_period");
        }
        self.audit.record(
            &caller,
            &method("RotateChannelSecret"),
            &channel.tenant_id,
            &channel.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(channel))
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::GetForwardingSetRequest;
    use hookplane_proto::v1::forwarding_service_server::ForwardingService as _;
    use tonic::Code;

    use super::*;
    use crate::forwarding::ForwardingApi;
    use crate::test_fixtures::*;

    fn api(store: &Store) -> ChannelApi {
        ChannelApi::new(store.clone())
    }

    async fn create(store: &Store, tenant_id: &str, channel: Channel) -> Result<Channel, Status> {
        api(store)
            .create_channel(operator(CreateChannelRequest {
                tenant_id: tenant_id.into(),
                channel: Some(channel),
            }))
            .await
            .map(Response::into_inner)
    }

    async fn rotate(
        store: &Store,
        id: &str,
        grace_seconds: Option<i64>,
    ) -> Result<Channel, Status> {
        api(store)
            .rotate_channel_secret(operator(RotateChannelSecretRequest {
                id: id.into(),
                new_secret: "rotated-secret".into(),
                grace_period: grace_seconds
                    .map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            }))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn a_channel_needs_its_line_secret() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let mut input = channel_input();
        input.line_channel_secret = String::new();
        assert_status(
            create(&store, &tenant.id, input).await,
            Code::InvalidArgument,
            "channel.line_channel_secret: must not be empty",
        );
    }

    #[tokio::test]
    async fn a_line_secret_over_256_characters_is_invalid() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let mut input = channel_input();
        input.line_channel_secret = "s".repeat(257);
        assert_status(
            create(&store, &tenant.id, input).await,
            Code::InvalidArgument,
            "channel.line_channel_secret: must be at most 256 characters",
        );
    }

    #[tokio::test]
    async fn a_channel_of_an_unknown_tenant_is_not_found() {
        let (_dir, store) = store();
        assert_status(
            create(&store, "tnt_missing", channel_input()).await,
            Code::NotFound,
            "tenant \"tnt_missing\" not found",
        );
    }

    #[tokio::test]
    async fn secrets_are_never_returned_but_a_stored_token_is_reported() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let mut input = channel_input();
        input.line_channel_access_token = "access-token".into();
        let channel = create(&store, &tenant.id, input).await.unwrap();
        assert!(channel.line_channel_secret.is_empty());
        assert!(channel.line_channel_access_token.is_empty());
        assert!(channel.has_access_token);
        let fetched = api(&store)
            .get_channel(operator(GetChannelRequest {
                id: channel.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(fetched.line_channel_secret.is_empty());
        assert!(fetched.line_channel_access_token.is_empty());
    }

    #[tokio::test]
    async fn the_ingress_path_names_the_channel() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let channel = create(&store, &tenant.id, channel_input()).await.unwrap();
        assert_eq!(
            channel.ingress_path,
            format!("/api/webhook/line/{}/events", channel.id)
        );
    }

    #[tokio::test]
    async fn a_rotation_with_grace_keeps_the_old_secret_until_its_end() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let channel = create(&store, &tenant.id, channel_input()).await.unwrap();
        let before = Time::now().seconds;
        let rotated = rotate(&store, &channel.id, Some(3600)).await.unwrap();
        let until = rotated.previous_secret_valid_until.unwrap().seconds;
        assert!((before + 3600..=before + 3601).contains(&until));
        let record = store.channel(&channel.id).unwrap();
        let sealer = store.sealer();
        let at = |field| Place::new(&record.id, field);
        assert_eq!(
            sealer
                .open(&record.secret, at(sealed_field::SECRET))
                .unwrap(),
            "rotated-secret"
        );
        let previous = record.previous_secret.as_ref().unwrap();
        assert_eq!(
            sealer
                .open(&previous.secret, at(sealed_field::PREVIOUS_SECRET))
                .unwrap(),
            "line-secret-0123456789"
        );
    }

    #[tokio::test]
    async fn a_rotation_without_grace_drops_the_old_secret_at_once() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let channel = create(&store, &tenant.id, channel_input()).await.unwrap();
        let rotated = rotate(&store, &channel.id, None).await.unwrap();
        assert!(rotated.previous_secret_valid_until.is_none());
        assert!(
            store
                .channel(&channel.id)
                .unwrap()
                .previous_secret
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_grace_period_over_seven_days_is_invalid() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let channel = create(&store, &tenant.id, channel_input()).await.unwrap();
        assert_status(
            rotate(&store, &channel.id, Some(8 * 86_400)).await,
            Code::InvalidArgument,
            "grace_period: must be between 0s and 7 days",
        );
    }

    #[tokio::test]
    async fn an_update_can_clear_the_access_token() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let mut input = channel_input();
        input.line_channel_access_token = "token".into();
        let channel = create(&store, &tenant.id, input).await.unwrap();
        let updated = api(&store)
            .update_channel(operator(UpdateChannelRequest {
                channel: Some(Channel {
                    id: channel.id,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["line_channel_access_token".into()],
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(!updated.has_access_token);
        assert_eq!(updated.display_name, "Brand OA");
    }

    #[tokio::test]
    async fn listing_channels_of_an_unknown_tenant_is_not_found() {
        let (_dir, store) = store();
        let result = api(&store)
            .list_channels(operator(ListChannelsRequest {
                tenant_id: "tnt_missing".into(),
                ..Default::default()
            }))
            .await;
        assert_status(result, Code::NotFound, "tenant \"tnt_missing\" not found");
    }

    #[tokio::test]
    async fn listing_channels_shows_only_that_tenants_channels() {
        let (_dir, store) = store();
        let a = create_tenant(&store, tenant_input()).await;
        let b = create_tenant(&store, tenant_input()).await;
        let mine = create(&store, &a.id, channel_input()).await.unwrap();
        create(&store, &b.id, channel_input()).await.unwrap();
        let listed = api(&store)
            .list_channels(operator(ListChannelsRequest {
                tenant_id: a.id,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<_> = listed.channels.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, [mine.id.as_str()]);
    }

    #[tokio::test]
    async fn deleting_a_channel_removes_its_forwarding_sets() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let channel = create(&store, &tenant.id, channel_input()).await.unwrap();
        let set = create_forwarding_set(&store, &channel.id, raw_set_input())
            .await
            .unwrap();
        let before = store.revision();
        api(&store)
            .delete_channel(operator(DeleteChannelRequest { id: channel.id }))
            .await
            .unwrap();
        assert_eq!(store.revision(), before + 1);
        let gone = ForwardingApi::new(store.clone())
            .get_forwarding_set(operator(GetForwardingSetRequest { id: set.id }))
            .await;
        assert_eq!(gone.unwrap_err().code(), Code::NotFound);
    }

    #[tokio::test]
    async fn a_tenant_admin_gets_permission_denied_on_another_tenants_channel() {
        let (_dir, store) = store();
        let own = create_tenant(&store, tenant_input()).await;
        let other = create_tenant(&store, tenant_input()).await;
        let theirs = create_channel(&store, &other.id).await;
        let mine = create_channel(&store, &own.id).await;
        let admin = tenant_admin_caller(&own.id);
        let api = api(&store);
        api.get_channel(as_caller(
            &admin,
            GetChannelRequest {
                id: mine.id.clone(),
            },
        ))
        .await
        .unwrap();
        let denied = |result: Result<Response<Channel>, Status>| {
            assert_eq!(result.unwrap_err().code(), Code::PermissionDenied);
        };
        denied(
            api.get_channel(as_caller(
                &admin,
                GetChannelRequest {
                    id: theirs.id.clone(),
                },
            ))
            .await,
        );
        denied(
            api.update_channel(as_caller(
                &admin,
                UpdateChannelRequest {
                    channel: Some(Channel {
                        id: theirs.id.clone(),
                        display_name: "Taken".into(),
                        ..Default::default()
                    }),
                    update_mask: None,
                },
            ))
            .await,
        );
        denied(
            api.rotate_channel_secret(as_caller(
                &admin,
                RotateChannelSecretRequest {
                    id: theirs.id.clone(),
                    new_secret: "new-secret".into(),
                    grace_period: None,
                },
            ))
            .await,
        );
        denied(
            api.create_channel(as_caller(
                &admin,
                CreateChannelRequest {
                    tenant_id: other.id.clone(),
                    channel: Some(channel_input()),
                },
            ))
            .await,
        );
        let deleted = api
            .delete_channel(as_caller(
                &admin,
                DeleteChannelRequest {
                    id: theirs.id.clone(),
                },
            ))
            .await;
        assert_eq!(deleted.unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(store.channel(&theirs.id).unwrap().display_name, "Brand OA");
    }

    #[tokio::test]
    async fn a_tenant_admin_listing_channels_sees_only_its_tenant() {
        let (_dir, store) = store();
        let own = create_tenant(&store, tenant_input()).await;
        let other = create_tenant(&store, tenant_input()).await;
        let mine = create_channel(&store, &own.id).await;
        create_channel(&store, &other.id).await;
        let admin = tenant_admin_caller(&own.id);
        let listed = api(&store)
            .list_channels(as_caller(&admin, ListChannelsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<_> = listed.channels.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids, [mine.id]);
        let refused = api(&store)
            .list_channels(as_caller(
                &admin,
                ListChannelsRequest {
                    tenant_id: other.id,
                    ..Default::default()
                },
            ))
            .await;
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    }
}
