//! Which queue the node under test keeps its deliveries in: its own spool (the default), or
//! NATS JetStream on a `nats-server` the bench starts for the run (the tests' harness: free
//! ports, a temporary store, never the machine's own NATS on 4222).

use hookplane_tests::nats::NatsCluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMode {
    Spool,
    Nats,
}

/// What a mode runs on; dropped, the NATS server stops.
pub struct QueueBackend {
    pub flags: Vec<String>,
    _nats: Option<NatsCluster>,
}

impl QueueMode {
    /// Both, in the order the tables show them.
    pub const BOTH: [QueueMode; 2] = [QueueMode::Spool, QueueMode::Nats];

    /// The system's name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            QueueMode::Spool => "hookplane",
            QueueMode::Nats => "hp-nats",
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
        })
    }
}

impl QueueBackend {
    pub fn flags(&self) -> Vec<&str> {
        self.flags.iter().map(String::as_str).collect()
    }
}
