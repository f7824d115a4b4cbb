//! The node's connection to the control plane, with the node token on every call: in clear for
//! an `http://` URL, over TLS for `https://` (never in clear), with the node's client
//! certificate when the control plane requires one (mTLS).

use std::time::Duration;

use hookplane_client::ClientTls;
use hookplane_proto::v1::config_service_client::ConfigServiceClient;
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::Error;

/// Big snapshots (many channels with their secrets) exceed tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

pub type ConfigClient = ConfigServiceClient<InterceptedService<Channel, Bearer>>;

/// A lazily connecting channel that reconnects by itself.
#[derive(Clone)]
pub struct ControlPlane {
    channel: Channel,
    bearer: Bearer,
}

impl ControlPlane {
    pub fn new(url: &str, node_token: &str, tls: &ClientTls) -> Result<Self, Error> {
        let endpoint = hookplane_client::endpoint(url, tls)
            .map_err(|e| Error::InvalidSetting(format!("control plane URL: {e}")))?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let token = AsciiMetadataValue::try_from(format!("Bearer {node_token}")).map_err(|_| {
            Error::InvalidSetting("the node token holds characters a header cannot".to_owned())
        })?;
        Ok(Self {
            channel: endpoint.connect_lazy(),
            bearer: Bearer(token),
        })
    }

    pub fn config(&self) -> ConfigClient {
        ConfigServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Adds `authorization: Bearer <node token>`.
#[derive(Clone)]
pub struct Bearer(AsciiMetadataValue);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}
