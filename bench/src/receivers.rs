//! Delivery targets in this process: hyper servers that count what arrives and answer 200,
//! listeners that accept and never answer, and addresses where nothing listens.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinSet};

/// The name of the receivers' threads (the bench counts how often they are preempted).
pub const THREAD_NAME: &str = "receivers";

/// Connections a hanging target holds before it starts closing new ones.
const HANGING_HOLD: usize = 4_096;

/// How a wait for deliveries ended.
pub struct Waited {
    /// When the expected total was reached, if it was.
    pub done: Option<Instant>,
    /// When the total last grew (within 5 ms): the end of the deliveries that did arrive.
    pub last_arrival: Instant,
}

/// Counting receivers, one listener each; dropping them stops the servers.
///
/// They run on a runtime of their own: on the load generator's, tens of thousands of deliveries
/// a second queued ahead of its timers, so a request went out late and the lateness was counted
/// as the service's acknowledgement latency, more so the more a service delivered.
pub struct Receivers {
    counts: Arc<Vec<AtomicU64>>,
    addrs: Vec<SocketAddr>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receivers {
    pub async fn counting(n: usize) -> anyhow::Result<Receivers> {
        Receivers::start(|| {
            (0..n)
                .map(|_| {
                    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                    listener.set_nonblocking(true)?;
                    TcpListener::from_std(listener)
                })
                .collect()
        })
    }

    /// Counting receivers on the listeners `listen` makes (inside their own runtime).
    fn start(
        listen: impl FnOnce() -> std::io::Result<Vec<TcpListener>>,
    ) -> anyhow::Result<Receivers> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()?;
        let listeners = {
            let _inside = runtime.enter();
            listen()
        };
        let listeners = match listeners {
            Ok(listeners) => listeners,
            Err(e) => {
                // Dropped from async code, where a runtime may not block to shut down.
                runtime.shutdown_background();
                return Err(e.into());
            }
        };
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new((0..listeners.len()).map(|_| AtomicU64::new(0)).collect());
        let mut addrs = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            addrs.push(listener.local_addr()?);
            let counts = Arc::clone(&counts);
            runtime.spawn(serve_counting(listener, counts, index));
        }
        Ok(Receivers {
            counts,
            addrs,
            runtime: Some(runtime),
        })
    }

    pub fn urls(&self) -> Vec<String> {
        self.addrs
            .iter()
            .map(|a| format!("http://{a}/hook"))
            .collect()
    }

    /// Deliveries received by all receivers together.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// True once every receiver has had at least one delivery.
    pub fn each_received(&self) -> bool {
        self.counts.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    }

    /// Waits until the total reaches `expected`; gives up after `limit`, or once nothing arrived
    /// for `stall`.
    pub async fn wait_total(&self, expected: u64, limit: Duration, stall: Duration) -> Waited {
        let deadline = Instant::now() + limit;
        let mut last = self.total();
        let mut moved = Instant::now();
        loop {
            let now = self.total();
            if now >= expected {
                let done = Instant::now();
                return Waited {
                    done: Some(done),
                    last_arrival: done,
                };
            }
            if now != last {
                last = now;
                moved = Instant::now();
            }
            if Instant::now() >= deadline || moved.elapsed() >= stall {
                return Waited {
                    done: None,
                    last_arrival: moved,
                };
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until no delivery arrived for `quiet` (bounded by `limit`).
    pub async fn wait_quiet(&self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = self.total();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.total();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        // Dropped from async code, where a runtime may not block to shut down.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn serve_counting(listener: TcpListener, counts: Arc<Vec<AtomicU64>>, index: usize) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let counts = Arc::clone(&counts);
                async move {
                    // A delivery counts once its whole body has arrived.
                    if request.into_body().collect().await.is_ok() {
                        counts[index].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Targets that accept connections and never answer; dropping them closes everything.
pub struct Hanging {
    addrs: Vec<SocketAddr>,
    _servers: JoinSet<()>,
}

impl Hanging {
    pub async fn start(n: usize) -> anyhow::Result<Hanging> {
        let mut servers = JoinSet::new();
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            servers.spawn(async move {
                let mut held = Vec::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    if held.len() < HANGING_HOLD {
                        held.push(stream);
                    }
                }
            });
        }
        Ok(Hanging {
            addrs,
            _servers: servers,
        })
    }

    pub fn urls(&self) -> Vec<String> {
        self.addrs
            .iter()
            .map(|a| format!("http://{a}/hook"))
            .collect()
    }
}

/// Targets that are down and come up later: ports held by sockets bound but not listening, so
/// connecting is refused and nobody else takes the port meanwhile.
pub struct DownTargets {
    sockets: Vec<tokio::net::TcpSocket>,
    addrs: Vec<SocketAddr>,
}

impl DownTargets {
    pub fn new(n: usize) -> anyhow::Result<DownTargets> {
        let mut sockets = Vec::with_capacity(n);
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(([127, 0, 0, 1], 0).into())?;
            addrs.push(socket.local_addr()?);
            sockets.push(socket);
        }
        Ok(DownTargets { sockets, addrs })
    }

    pub fn urls(&self) -> Vec<String> {
        self.addrs
            .iter()
            .map(|a| format!("http://{a}/hook"))
            .collect()
    }

    /// The targets come up: counting receivers on the same ports.
    pub fn come_up(self) -> anyhow::Result<Receivers> {
        Receivers::start(move || {
            self.sockets
                .into_iter()
                .map(|socket| socket.listen(1024))
                .collect()
        })
    }
}

/// URLs on 127.0.0.1 ports that were free a moment ago: connecting is refused.
pub fn refusing(n: usize) -> anyhow::Result<Vec<String>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(format!("http://{}/hook", l.local_addr()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::http_client;

    #[tokio::test]
    async fn counting_receivers_count_each_delivery_per_receiver() {
        let receivers = Receivers::counting(2).await.unwrap();
        let client = http_client::client();
        let urls = receivers.urls();
        http_client::post(&client, urls[0].parse().unwrap(), &[], Bytes::from("a"))
            .await
            .unwrap();
        assert!(!receivers.each_received());
        http_client::post(&client, urls[1].parse().unwrap(), &[], Bytes::from("b"))
            .await
            .unwrap();
        assert_eq!(receivers.total(), 2);
        assert!(receivers.each_received());
    }

    #[tokio::test]
    async fn a_refusing_target_refuses_connections() {
        let url = refusing(1).unwrap().remove(0);
        let sent = http_client::post(
            &http_client::client(),
            url.parse().unwrap(),
            &[],
            Bytes::new(),
        )
        .await;
        assert!(sent.is_err());
    }
}
