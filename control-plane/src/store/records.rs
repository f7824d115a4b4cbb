//! The records kept in the store, as serde_json values; secrets are `Sealed`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Time;
use crate::sealing::Sealed;

/// The fields holding sealed values, as their seals name them (`<record id>/<field>` is each
/// value's associated data). Never rename one: the values stored under it would no longer open.
pub(crate) mod sealed_field {
    pub const SECRET: &str = "secret";
    pub const PREVIOUS_SECRET: &str = "previous_secret";
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const GENESYS_CLIENT_SECRET: &str = "genesys.client_secret";
    pub const GENESYS_OUTBOUND_SIGNATURE_SECRET: &str = "genesys.outbound_signature_secret";
}

/// A record that holds sealed values, each with the field its seal names: what the re-seal
/// walks (resealing.rs). A new sealed field is listed here or it is never re-sealed.
pub(crate) trait SealedFields {
    fn record_id(&self) -> &str;
    fn sealed_fields(&mut self) -> Vec<(&'static str, &mut Sealed)>;
}

impl SealedFields for ChannelRecord {
    fn record_id(&self) -> &str {
        &self.id
    }

    fn sealed_fields(&mut self) -> Vec<(&'static str, &mut Sealed)> {
        let mut fields = vec![(sealed_field::SECRET, &mut self.secret)];
        if let Some(previous) = &mut self.previous_secret {
            fields.push((sealed_field::PREVIOUS_SECRET, &mut previous.secret));
        }
        if let Some(token) = &mut self.access_token {
            fields.push((sealed_field::ACCESS_TOKEN, token));
        }
        fields
    }
}

impl SealedFields for ForwardingSetRecord {
    fn record_id(&self) -> &str {
        &self.id
    }

    fn sealed_fields(&mut self) -> Vec<(&'static str, &mut Sealed)> {
        match &mut self.genesys {
            Some(g) => vec![
                (sealed_field::GENESYS_CLIENT_SECRET, &mut g.client_secret),
                (
                    sealed_field::GENESYS_OUTBOUND_SIGNATURE_SECRET,
                    &mut g.outbound_signature_secret,
                ),
            ],
            None => Vec::new(),
        }
    }
}

impl SealedFields for SubscriptionRecord {
    fn record_id(&self) -> &str {
        &self.id
    }

    fn sealed_fields(&mut self) -> Vec<(&'static str, &mut Sealed)> {
        let mut fields = vec![(sealed_field::SECRET, &mut self.secret)];
        if let Some(previous) = &mut self.previous_secret {
            fields.push((sealed_field::PREVIOUS_SECRET, &mut previous.secret));
        }
        fields
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TenantRecord {
    pub id: String,
    pub display_name: String,
    pub notification_emails: Vec<String>,
    pub zones: Vec<ZoneRecord>,
    /// `None` keeps following the product default.
    pub max_active_subscriptions: Option<u32>,
    pub max_forwarding_sets_per_channel: Option<u32>,
    pub create_time: Time,
    pub update_time: Time,
    /// The time of the last PurgeTenantData: nodes drop the tenant's jobs enqueued at or before
    /// it. Travels to nodes with the tenant, so a node offline at the time still does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_before: Option<Time>,
}

pub(crate) const DEFAULT_MAX_ACTIVE_SUBSCRIPTIONS: u32 = 3;
pub(crate) const DEFAULT_MAX_FORWARDING_SETS_PER_CHANNEL: u32 = 10;

impl TenantRecord {
    pub fn max_active_subscriptions(&self) -> u32 {
        self.max_active_subscriptions
            .unwrap_or(DEFAULT_MAX_ACTIVE_SUBSCRIPTIONS)
    }

    pub fn max_forwarding_sets_per_channel(&self) -> u32 {
        self.max_forwarding_sets_per_channel
            .unwrap_or(DEFAULT_MAX_FORWARDING_SETS_PER_CHANNEL)
    }

    /// Until when the tenant has bought `zone`, if at all.
    pub fn zone_valid_until(&self, zone: i32) -> Option<Time> {
        self.zones
            .iter()
            .find(|z| z.zone == zone)
            .map(|z| z.valid_until)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ZoneRecord {
    /// The `hookplane.v1.Zone` value.
    pub zone: i32,
    pub valid_until: Time,
}

/// A secret replaced by a rotation that keeps working until `valid_until`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreviousSecret {
    pub secret: Sealed,
    pub valid_until: Time,
}

impl PreviousSecret {
    pub fn still_valid(&self, now: Time) -> bool {
        self.valid_until > now
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChannelRecord {
    pub id: String,
    pub tenant_id: String,
    pub display_name: String,
    pub secret: Sealed,
    pub previous_secret: Option<PreviousSecret>,
    pub access_token: Option<Sealed>,
    pub metadata: BTreeMap<String, String>,
    pub create_time: Time,
    pub update_time: Time,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ForwardingSetRecord {
    pub id: String,
    pub channel_id: String,
    pub tenant_id: String,
    pub name: String,
    /// Empty only for a Genesys set, whose inbound URL derives from its settings.
    pub url: String,
    pub enabled: bool,
    /// The `hookplane.v1.ForwardingKind` value, never UNSPECIFIED.
    pub kind: i32,
    pub timeout: Duration,
    pub genesys: Option<GenesysRecord>,
    pub create_time: Time,
    pub update_time: Time,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GenesysRecord {
    pub region_domain: String,
    pub login_base_url: String,
    pub api_base_url: String,
    pub client_id: String,
    pub client_secret: Sealed,
    pub integration_id: String,
    pub outbound_signature_secret: Sealed,
    pub custom_attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SubscriptionRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// The `hookplane.v1.SubscriptionState` value.
    pub state: i32,
    /// The `hookplane.v1.SignatureScheme` value, never UNSPECIFIED.
    pub signature_scheme: i32,
    pub secret: Sealed,
    pub previous_secret: Option<PreviousSecret>,
    pub state_reason: String,
    pub stopped_by_system: bool,
    pub create_time: Time,
    pub update_time: Time,
}

/// An API token. Its secret is kept only as a SHA-256: the secret holds 256 random bits, so
/// nothing short of the secret itself finds a preimage, and a slow password hash would buy
/// nothing but a slower check on every call (nodes check it on every publish).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub id: String,
    pub display_name: String,
    /// The `hookplane.v1.Role` value, never UNSPECIFIED.
    pub role: i32,
    /// Empty for an operator token.
    pub tenant_id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    pub create_time: Time,
    pub expire_time: Option<Time>,
}

impl TokenRecord {
    pub fn expired(&self, now: Time) -> bool {
        self.expire_time.is_some_and(|end| end <= now)
    }
}
