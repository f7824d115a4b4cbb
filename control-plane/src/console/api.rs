//! The console's way into the control plane: the same gRPC services every other client calls,
//! over a loopback channel, with the signed-in person's token as the bearer. The console decides
//! nothing about rights; whatever the token may not do, the API refuses, and the page says so.

use hookplane_proto::v1::channel_service_client::ChannelServiceClient;
use hookplane_proto::v1::delivery_service_client::DeliveryServiceClient;
use hookplane_proto::v1::forwarding_service_client::ForwardingServiceClient;
use hookplane_proto::v1::notification_service_client::NotificationServiceClient;
use hookplane_proto::v1::subscription_service_client::SubscriptionServiceClient;
use hookplane_proto::v1::tenant_service_client::TenantServiceClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::text::Text;

/// The control plane's API as one signed-in person.
pub struct Api {
    channel: Channel,
    bearer: Option<AsciiMetadataValue>,
}

impl Api {
    pub fn new(channel: Channel, token: &str) -> Api {
        // A token that cannot be a header value is sent as none: the API says UNAUTHENTICATED.
        let bearer = MetadataValue::try_from(format!("Bearer {token}")).ok();
        Api { channel, bearer }
    }

    /// `message` with the bearer token.
    pub fn call<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(bearer) = &self.bearer {
            let mut bearer = bearer.clone();
            bearer.set_sensitive(true);
            request.metadata_mut().insert("authorization", bearer);
        }
        request
    }

    pub fn tenants(&self) -> TenantServiceClient<Channel> {
        TenantServiceClient::new(self.channel.clone())
    }

    pub fn channels(&self) -> ChannelServiceClient<Channel> {
        ChannelServiceClient::new(self.channel.clone())
    }

    pub fn forwarding(&self) -> ForwardingServiceClient<Channel> {
        ForwardingServiceClient::new(self.channel.clone())
    }

    pub fn subscriptions(&self) -> SubscriptionServiceClient<Channel> {
        SubscriptionServiceClient::new(self.channel.clone())
    }

    pub fn deliveries(&self) -> DeliveryServiceClient<Channel> {
        DeliveryServiceClient::new(self.channel.clone())
    }

    pub fn notifications(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel.clone())
    }
}

/// An API refusal as a person reads it: the API's own message where it speaks to the person
/// (bad input, missing resource, quota), a plain sentence where it speaks about the plumbing.
pub fn readable(t: &Text, status: &Status) -> String {
    let message = status.message();
    match status.code() {
        Code::Unauthenticated => t.error_unauthenticated.to_owned(),
        Code::PermissionDenied if message.is_empty() => t.error_permission.to_owned(),
        Code::PermissionDenied => format!("{} {}", t.error_permission, sentence(message)),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
            t.error_unavailable.to_owned()
        }
        Code::Internal | Code::DataLoss | Code::Unimplemented => t.error_internal.to_owned(),
        _ if message.is_empty() => t.error_internal.to_owned(),
        _ => sentence(message),
    }
}

/// `message` with a capital first letter, as it starts a sentence on the page.
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::text::ENGLISH;

    #[test]
    fn bad_input_reads_as_the_api_says_it() {
        let status = Status::invalid_argument("url: must be http or https");
        assert_eq!(readable(&ENGLISH, &status), "Url: must be http or https");
    }

    #[test]
    fn a_refused_token_asks_to_sign_in_again() {
        let status = Status::unauthenticated("missing or invalid admin token");
        assert_eq!(readable(&ENGLISH, &status), ENGLISH.error_unauthenticated);
    }

    #[test]
    fn a_refusal_says_the_token_may_not_and_why() {
        let status = Status::permission_denied("this token may act on tenant \"tnt_1\" only");
        assert_eq!(
            readable(&ENGLISH, &status),
            "Your token may not do this. This token may act on tenant \"tnt_1\" only"
        );
    }

    #[test]
    fn transport_failures_do_not_leak_plumbing() {
        let status = Status::unavailable("tcp connect error: 127.0.0.1:50051");
        assert_eq!(readable(&ENGLISH, &status), ENGLISH.error_unavailable);
    }
}
