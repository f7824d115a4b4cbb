//! Which queue the node under test keeps its deliveries in: its own spool (the default), or
//! NATS JetStream on `nats-server`s the bench starts for the run (the tests' harness: free
//! ports, a temporary store, never the machine's own NATS on 4222): one server, or a cluster of
//! three with every stream replicated three times, as production runs it.

use hookplane_tests::nats::NatsCluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMode {
    Spool,
    Nats,
    /// Three NATS servers, R3 streams.
    NatsCluster,
}

/// What a mode runs on; dropped, the NATS server stops.
pub struct QueueBackend {
    pub flags: Vec<String>,
    _nats: Option<NatsCluster>,
}

impl QueueMode {
    /// The spool and one NATS server, in the order the tables show them.
    pub const BOTH: [QueueMode; 2] = [QueueMode::Spool, QueueMode::Nats];
    /// Every mode, in the order the tables show them.
    pub const ALL: [QueueMode; 3] = [QueueMode::Spool, QueueMode::Nats, QueueMode::NatsCluster];

    /// The system's name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            QueueMode::Spool => "hookplane",
            QueueMode::Nats => "hp-nats",
            QueueMode::NatsCluster => "hp-nats3",
        }
    }

    /// What the tables say it runs on.
    pub fn description(self) -> &'static str {
        match self {
            QueueMode::Spool => "its own spool",
            QueueMode::Nats => "--queue nats (one local nats-server)",
            QueueMode::NatsCluster => "--queue nats (three local nats-servers, R3 streams)",
        }
    }

    /// Starts what the mode needs: the flags to give the node, and what keeps it running.
    pub fn start(self) -> anyhow::Result<QueueBackend> {
        Ok(match self {
            QueueMode::Spool => QueueBackend {
                flags: Vec::new(),
                _nats: None,
            },
            QueueMode::Nats => {
                let nats = NatsCluster::single()?;
                QueueBackend {
                    flags: vec!["--queue".to_owned(), nats.queue_flag()],
                    _nats: Some(nats),
                }
            }
            QueueMode::NatsCluster => {
                let nats = NatsCluster::start(3)?;
                QueueBackend {
                    flags: vec![
                        "--queue".to_owned(),
                        nats.queue_flag(),
                        "--nats-stream-replicas".to_owned(),
                        "3".to_owned(),
                    ],
                    _nats: Some(nats),
                }
            }
        })
    }
}

impl QueueBackend {
    pub fn flags(&self) -> Vec<&str> {
        self.flags.iter().map(String::as_str).collect()
    }
}
