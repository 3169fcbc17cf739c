//! The SPU's session with the SC: announce this SPU, apply the assignment
//! stream, heartbeat the state of every replica — and when the SC is
//! unreachable or the session ends, keep serving and reconnect with
//! backoff until shutdown.

use std::sync::Arc;
use std::time::Duration;

use runnel_api::{SpuConnectRequest, SpuHeartbeatRequest};
use runnel_metadata::SpuSpec;
use runnel_transport::{Connection, TransportConfig, TransportError};
use runnel_types::SpuId;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::SpuConfig;
use crate::replicas::Replicas;

/// Assignment updates the SC may send ahead of the SPU applying them.
const ASSIGNMENT_WINDOW: u32 = 64;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct ScSession {
    sc_addr: String,
    spec: SpuSpec,
    heartbeat_interval: Duration,
    transport: TransportConfig,
    replicas: Arc<Replicas>,
}

/// How a session ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    /// It never got going: the SC was unreachable or refused this SPU.
    Unreachable(String),
    /// It was established (an assignment snapshot arrived), then lost.
    Lost(String),
}

impl ScSession {
    pub fn new(config: &SpuConfig, replicas: Arc<Replicas>) -> ScSession {
        ScSession {
            sc_addr: config.sc_addr.clone(),
            spec: SpuSpec {
                id: config.id,
                public_addr: config.public_addr.clone(),
                private_addr: config.private_addr.clone(),
                rack: None,
            },
            heartbeat_interval: config.heartbeat_interval,
            transport: config.transport.clone(),
            replicas,
        }
    }

    /// Keeps a session with the SC until `shutdown`: reconnects after
    /// 100 ms, doubling to 2 s while the SC stays unreachable.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        let mut reported_unreachable = false;
        loop {
            match self.session(&shutdown).await {
                Ended::Shutdown => return,
                Ended::Lost(reason) => {
                    warn!(sc_addr = %self.sc_addr, %reason, "lost the SC session; serving the current replicas and reconnecting");
                    backoff = FIRST_BACKOFF;
                    reported_unreachable = false;
                }
                Ended::Unreachable(reason) => {
                    // Said once per outage, not on every retry.
                    if reported_unreachable {
                        debug!(sc_addr = %self.sc_addr, %reason, "SC still unreachable");
                    } else {
                        warn!(sc_addr = %self.sc_addr, %reason, "no session with the SC; serving the current replicas and retrying");
                        reported_unreachable = true;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn session(&self, shutdown: &CancellationToken) -> Ended {
        let connecting = async {
            let connection = Connection::connect(&self.sc_addr, self.transport.clone()).await?;
            let request = SpuConnectRequest {
                spec: self.spec.clone(),
            };
            let assignments = connection.stream(&request, ASSIGNMENT_WINDOW).await?;
            Ok::<_, TransportError>((connection, assignments))
        };
        let (connection, mut assignments) = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            connected = connecting => match connected {
                Ok(connected) => connected,
                Err(error) => return Ended::Unreachable(error.to_string()),
            },
        };

        // Heartbeats run in their own task so that a slow update (opening
        // a log that needs recovery) does not make this SPU look dead.
        let mut heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            connection,
            self.spec.id,
            self.heartbeat_interval,
            Arc::clone(&self.replicas),
        )));
        let mut established = false;
        let ended = |reason: String, established: bool| {
            if established {
                Ended::Lost(reason)
            } else {
                Ended::Unreachable(reason)
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ended::Shutdown,
                stopped = &mut heartbeat.0 => {
                    let reason = stopped.unwrap_or_else(|error| format!("heartbeat task ended: {error}"));
                    return ended(reason, established);
                }
                update = assignments.next() => match update {
                    // Applied outside the race: an update is never left
                    // half done (a log opened but not recorded, a replica
                    // marked removed but still listed).
                    Some(Ok(update)) => {
                        if !established {
                            info!(spu = %self.spec.id, sc_addr = %self.sc_addr, "connected to the SC");
                            established = true;
                        }
                        self.replicas.apply(update).await;
                    }
                    Some(Err(error)) => {
                        return ended(format!("assignment stream failed: {error}"), established);
                    }
                    None => return ended("the SC ended the assignment stream".to_string(), established),
                },
            }
        }
    }
}

/// Reports every replica each heartbeat interval; returns why it had to
/// stop (the connection failed).
async fn heartbeat(
    connection: Connection,
    id: SpuId,
    interval: Duration,
    replicas: Arc<Replicas>,
) -> String {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let request = SpuHeartbeatRequest {
            id,
            replicas: replicas.statuses(),
        };
        match connection.call(&request).await {
            Ok(()) => {}
            Err(TransportError::Api(error)) => {
                warn!(%error, code = %error.code, "the SC refused a heartbeat");
            }
            Err(error) => return format!("heartbeat failed: {error}"),
        }
    }
}

/// A task that is stopped when its owner lets go of it.
#[derive(Debug)]
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
