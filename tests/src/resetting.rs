//! A target that resets every connection: it accepts, reads the start of the request and closes
//! with `SO_LINGER` 0, so the sender gets a TCP RST instead of an answer.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::{io::AsyncReadExt, net::TcpListener};

/// The resetting target; dropping it stops the listener.
pub struct ResettingReceiver {
    pub addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl ResettingReceiver {
    pub async fn start() -> anyhow::Result<ResettingReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut start = [0u8; 512];
                    let _ = stream.read(&mut start).await;
                    let _ = stream.set_zero_linger();
                });
            }
        });
        Ok(ResettingReceiver {
            addr,
            connections,
            server,
        })
    }

    /// The URL of `path` on this target.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted (and reset) so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for ResettingReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
