use std::time::Duration;

use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    BearerToken, ClientTls, Error,
    v1::{
        audit_service_client::AuditServiceClient, channel_service_client::ChannelServiceClient,
        config_service_client::ConfigServiceClient, delivery_service_client::DeliveryServiceClient,
        event_service_client::EventServiceClient,
        forwarding_service_client::ForwardingServiceClient,
        notification_service_client::NotificationServiceClient,
        subscription_service_client::SubscriptionServiceClient,
        tenant_service_client::TenantServiceClient, token_service_client::TokenServiceClient,
    },
};

/// The transport every stub of a [`Client`] runs on.
pub type AuthedChannel = InterceptedService<Channel, BearerToken>;

/// A config snapshot carries every resource of every tenant; tonic's default 4 MiB is too small.
pub const CONFIG_MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a hookplane gRPC port. Cheap to clone: clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    token: BearerToken,
}

impl Client {
    /// Connects now, failing when the server is not reachable. `server` is like
    /// `http://127.0.0.1:50051`; a bare `host:port` means plain-text HTTP/2; `https://` dials TLS
    /// trusting the system's roots. `token` goes out as `authorization: Bearer <token>` on every
    /// call.
    pub async fn connect(server: &str, token: &str) -> Result<Client, Error> {
        Client::connect_with(server, token, &ClientTls::new()).await
    }

    /// [`Client::connect`] with what `https://` trusts and presents (a CA, a client certificate).
    pub async fn connect_with(server: &str, token: &str, tls: &ClientTls) -> Result<Client, Error> {
        let token = BearerToken::new(token)?;
        let channel = endpoint(server, tls)?
            .connect()
            .await
            .map_err(|source| Error::Connect {
                server: server.to_owned(),
                source,
            })?;
        Ok(Client { channel, token })
    }

    /// Like [`Client::connect`] but connects on the first call and reconnects as needed, so a
    /// process may start before its server does.
    pub fn connect_lazy(server: &str, token: &str) -> Result<Client, Error> {
        Client::connect_lazy_with(server, token, &ClientTls::new())
    }

    /// [`Client::connect_lazy`] with what `https://` trusts and presents.
    pub fn connect_lazy_with(server: &str, token: &str, tls: &ClientTls) -> Result<Client, Error> {
        let token = BearerToken::new(token)?;
        let channel = endpoint(server, tls)?.connect_lazy();
        Ok(Client { channel, token })
    }

    /// Wraps a channel the caller built (custom TLS, timeouts or an in-memory transport).
    pub fn from_channel(channel: Channel, token: &str) -> Result<Client, Error> {
        Ok(Client {
            channel,
            token: BearerToken::new(token)?,
        })
    }

    fn authed(&self) -> AuthedChannel {
        InterceptedService::new(self.channel.clone(), self.token.clone())
    }

    pub fn tenants(&self) -> TenantServiceClient<AuthedChannel> {
        TenantServiceClient::new(self.authed())
    }

    pub fn channels(&self) -> ChannelServiceClient<AuthedChannel> {
        ChannelServiceClient::new(self.authed())
    }

    pub fn forwarding(&self) -> ForwardingServiceClient<AuthedChannel> {
        ForwardingServiceClient::new(self.authed())
    }

    pub fn subscriptions(&self) -> SubscriptionServiceClient<AuthedChannel> {
        SubscriptionServiceClient::new(self.authed())
    }

    pub fn deliveries(&self) -> DeliveryServiceClient<AuthedChannel> {
        DeliveryServiceClient::new(self.authed())
    }

    pub fn notifications(&self) -> NotificationServiceClient<AuthedChannel> {
        NotificationServiceClient::new(self.authed())
    }

    /// API tokens: create (the secret is returned once), list, revoke.
    pub fn tokens(&self) -> TokenServiceClient<AuthedChannel> {
        TokenServiceClient::new(self.authed())
    }

    /// The audit trail of admin writes, secret reveals and token changes.
    pub fn audit(&self) -> AuditServiceClient<AuthedChannel> {
        AuditServiceClient::new(self.authed())
    }

    /// Event publishing on a data-plane node; needs the publisher token.
    pub fn events(&self) -> EventServiceClient<AuthedChannel> {
        EventServiceClient::new(self.authed())
    }

    /// The config stream and delivery reports of the control plane; needs the node token.
    pub fn config(&self) -> ConfigServiceClient<AuthedChannel> {
        ConfigServiceClient::new(self.authed())
            .max_decoding_message_size(CONFIG_MAX_DECODING_MESSAGE_SIZE)
    }
}

fn endpoint(server: &str, tls: &ClientTls) -> Result<Endpoint, Error> {
    Ok(crate::tls::endpoint(server, tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_lazy_succeeds_without_a_server() {
        assert!(Client::connect_lazy("http://127.0.0.1:9", "t").is_ok());
    }

    #[tokio::test]
    async fn connect_lazy_accepts_a_bare_host_and_port() {
        assert!(Client::connect_lazy("127.0.0.1:9", "t").is_ok());
    }

    #[test]
    fn connect_lazy_rejects_an_address_that_is_not_a_uri() {
        assert!(matches!(
            Client::connect_lazy("http://exa mple", "t"),
            Err(Error::InvalidServer { .. })
        ));
    }

    #[tokio::test]
    async fn connect_fails_when_nothing_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let result = Client::connect(&format!("http://{addr}"), "t").await;
        assert!(matches!(result, Err(Error::Connect { .. })));
    }

    #[test]
    fn connect_lazy_rejects_an_unusable_token() {
        assert!(matches!(
            Client::connect_lazy("http://127.0.0.1:9", "a\nb"),
            Err(Error::InvalidToken)
        ));
    }
}
