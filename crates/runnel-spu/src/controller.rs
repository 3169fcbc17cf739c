//! The SPU's session with the SC: announce this SPU, apply the assignment
//! stream, heartbeat the state of every replica — and when the SC is
//! unreachable, stops answering, or belongs to another cluster, keep
//! serving and reconnect with backoff until shutdown.

use std::sync::Arc;
use std::time::Duration;

use runnel_api::{AlterIsrRequest, SpuConnectRequest, SpuHeartbeatRequest};
use runnel_metadata::{AssignmentUpdate, SpuSpec};
use runnel_transport::{Backoff, Connection, TransportConfig, TransportError};
use runnel_types::SpuId;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::SpuConfig;
use crate::auth::Authorizer;
use crate::replica::IsrProposal;
use crate::replicas::{Lookup, Replicas};

/// Assignment updates the SC may send ahead of the SPU applying them.
const ASSIGNMENT_WINDOW: u32 = 64;
/// Heartbeat intervals an SC may take to answer one before this SPU
/// takes it for dead and reconnects.
const HEARTBEAT_PATIENCE: u32 = 3;
/// Wait before sending again an ISR proposal that got no answer.
const PROPOSAL_RETRY: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(crate) struct ScSession {
    sc_addr: String,
    spec: SpuSpec,
    heartbeat_interval: Duration,
    transport: TransportConfig,
    replicas: Arc<Replicas>,
    /// Takes the security state the SC sends.
    authorizer: Arc<Authorizer>,
    /// ISR changes the replicas this SPU leads propose, sent to the SC
    /// while a session is up.
    proposals: Arc<Mutex<mpsc::UnboundedReceiver<IsrProposal>>>,
}

/// How a session ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    /// It never got going: the SC was unreachable or refused this SPU.
    Unreachable(String),
    /// It was established (an assignment snapshot arrived), then lost.
    Lost(String),
    /// This SPU refused the SC (another cluster's, or its cluster id
    /// cannot be checked): nothing it sent was applied.
    Refused(String),
}

impl ScSession {
    /// `transport`: how to reach the SC (with TLS, presenting this SPU's
    /// certificate).
    pub fn new(
        config: &SpuConfig,
        transport: TransportConfig,
        replicas: Arc<Replicas>,
        authorizer: Arc<Authorizer>,
        proposals: mpsc::UnboundedReceiver<IsrProposal>,
    ) -> ScSession {
        ScSession {
            sc_addr: config.sc_addr.clone(),
            spec: SpuSpec {
                id: config.id,
                public_addr: config
                    .advertised_public_addr
                    .clone()
                    .unwrap_or_else(|| config.public_addr.clone()),
                private_addr: config
                    .advertised_private_addr
                    .clone()
                    .unwrap_or_else(|| config.private_addr.clone()),
                rack: None,
            },
            heartbeat_interval: config.heartbeat_interval,
            transport,
            replicas,
            authorizer,
            proposals: Arc::new(Mutex::new(proposals)),
        }
    }

    /// Keeps a session with the SC until `shutdown`: reconnects after
    /// [`Backoff::reconnect`] delays while the SC stays unreachable or
    /// refused.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::reconnect();
        // The last problem logged at warn or error level: a problem that
        // persists is said once, not on every retry.
        let mut reported: Option<String> = None;
        loop {
            match self.session(&shutdown).await {
                Ended::Shutdown => return,
                Ended::Lost(reason) => {
                    warn!(sc_addr = %self.sc_addr, %reason, "lost the SC session; serving the current replicas and reconnecting");
                    backoff.reset();
                    reported = None;
                }
                Ended::Unreachable(reason) => {
                    if reported.is_some() {
                        debug!(sc_addr = %self.sc_addr, %reason, "SC still unreachable");
                    } else {
                        warn!(sc_addr = %self.sc_addr, %reason, "no session with the SC; serving the current replicas and retrying");
                        reported = Some(reason);
                    }
                }
                Ended::Refused(reason) => {
                    if reported.as_ref() == Some(&reason) {
                        debug!(sc_addr = %self.sc_addr, %reason, "SC still refused");
                    } else {
                        error!(sc_addr = %self.sc_addr, %reason, "refused the SC's assignments; serving the current replicas and retrying");
                        reported = Some(reason);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    async fn session(&self, shutdown: &CancellationToken) -> Ended {
        let connecting = async {
            let connection = Connection::connect(
                &self.sc_addr,
                self.transport.expecting(runnel_auth::SC_PRINCIPAL),
            )
            .await?;
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
        let _proposing = AbortOnDrop(tokio::spawn(propose_isr_changes(
            connection.clone(),
            self.spec.id,
            Arc::clone(&self.replicas),
            Arc::clone(&self.proposals),
            self.replicas.proposal_sender(),
        )));
        let mut heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            connection,
            self.spec.id,
            self.heartbeat_interval,
            Arc::clone(&self.replicas),
        )));
        // Set by the first snapshot, once its cluster id is checked: no
        // update is applied before that.
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
                        let snapshot = matches!(update, AssignmentUpdate::Snapshot { .. });
                        if !established && !snapshot {
                            return Ended::Refused(
                                "the SC sent an assignment change before the full set; is it a Runnel SC of the same version?"
                                    .to_string(),
                            );
                        }
                        if let Err(refusal) = self.apply(update).await {
                            return Ended::Refused(refusal);
                        }
                        if !established {
                            info!(spu = %self.spec.id, sc_addr = %self.sc_addr, "connected to the SC");
                            established = true;
                        }
                    }
                    Some(Err(error)) => {
                        return ended(format!("assignment stream failed: {error}"), established);
                    }
                    None => return ended("the SC ended the assignment stream".to_string(), established),
                },
            }
        }
    }

    /// Applies one update: security state to the authorizer, the rest to
    /// the replicas.
    async fn apply(&self, update: AssignmentUpdate) -> Result<(), String> {
        match update {
            AssignmentUpdate::Security(state) => {
                debug!(
                    superusers = state.superusers.len(),
                    roles = state.policy.roles.len(),
                    revoked = state.revoked.len(),
                    "security state from the SC"
                );
                self.authorizer.update(state);
                Ok(())
            }
            update => self
                .replicas
                .apply(update)
                .await
                .map_err(|refusal| refusal.to_string()),
        }
    }
}

/// Sends each ISR proposal to the SC, one at a time, for as long as the
/// session lasts. A refusal is told to its replica; an accepted change
/// arrives as an assignment. A proposal whose answer was lost goes back
/// in the queue: the SC answers a repeated proposal it has committed
/// already with success.
async fn propose_isr_changes(
    connection: Connection,
    spu: SpuId,
    replicas: Arc<Replicas>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<IsrProposal>>>,
    requeue: mpsc::UnboundedSender<IsrProposal>,
) {
    // One session's task at a time holds the queue.
    let mut proposals = queue.lock().await;
    while let Some(proposal) = proposals.recv().await {
        let Lookup::Ready(replica) = replicas.lookup(&proposal.key) else {
            continue;
        };
        if replica.incarnation() != proposal.incarnation {
            continue;
        }
        let request = AlterIsrRequest {
            spu,
            key: proposal.key.clone(),
            leader_epoch: proposal.epoch,
            current_isr: proposal.current.clone(),
            new_isr: proposal.proposed.clone(),
        };
        match connection.call(&request).await {
            Ok(isr) => {
                info!(partition = %proposal.key, epoch = %proposal.epoch, ?isr, "the SC committed an ISR change");
            }
            Err(TransportError::Api(error)) => {
                warn!(partition = %proposal.key, epoch = %proposal.epoch, %error, "the SC refused an ISR change");
                replica.on_isr_refused(proposal.epoch, proposal.proposal);
            }
            Err(error) => {
                warn!(partition = %proposal.key, %error, "no answer to an ISR change; sending it again");
                let _ = requeue.send(proposal);
                // A connection that is gone ends the session (its
                // heartbeats fail too), and this task with it.
                tokio::time::sleep(PROPOSAL_RETRY).await;
            }
        }
    }
}

/// Reports every replica each heartbeat interval; returns why it had to
/// stop: the connection failed, or the SC did not answer within
/// [`HEARTBEAT_PATIENCE`] intervals (an SC that hangs without closing the
/// connection is as dead as one that closed it).
async fn heartbeat(
    connection: Connection,
    id: SpuId,
    interval: Duration,
    replicas: Arc<Replicas>,
) -> String {
    let patience = interval.saturating_mul(HEARTBEAT_PATIENCE);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let reading = Arc::clone(&replicas);
        let statuses = match tokio::task::spawn_blocking(move || reading.statuses()).await {
            Ok(statuses) => statuses,
            Err(error) => return format!("reading the replicas' state did not complete: {error}"),
        };
        let request = SpuHeartbeatRequest {
            id,
            replicas: statuses,
        };
        match tokio::time::timeout(patience, connection.call(&request)).await {
            Ok(Ok(())) => {}
            Ok(Err(TransportError::Api(error))) => {
                warn!(%error, code = %error.code, "the SC refused a heartbeat");
            }
            Ok(Err(error)) => return format!("heartbeat failed: {error}"),
            Err(_) => {
                return format!(
                    "the SC did not answer a heartbeat within {patience:?}; taking it for dead"
                );
            }
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
