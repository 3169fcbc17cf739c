//! Connections to SPUs, one per address, shared by every producer and
//! consumer of a client. A connection found closed is replaced on the
//! next use; nothing reconnects in the background.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use runnel_transport::{Connection, TransportConfig, TransportError};
use tokio::sync::Mutex as AsyncMutex;

/// One address's connection; the async lock makes concurrent users of a
/// dead connection wait for one reconnect instead of each making one.
type Slot = Arc<AsyncMutex<Option<Connection>>>;

#[derive(Debug)]
pub(crate) struct SpuPool {
    config: TransportConfig,
    /// Keyed by public address; bounded by the SPUs the metadata names.
    slots: Mutex<HashMap<String, Slot>>,
}

impl SpuPool {
    pub fn new(config: TransportConfig) -> SpuPool {
        SpuPool {
            config,
            slots: Mutex::default(),
        }
    }

    /// A live connection to `addr`, connecting if there is none.
    pub async fn get(&self, addr: &str) -> Result<Connection, TransportError> {
        let slot = Arc::clone(
            self.slots
                .lock()
                .expect("pool lock")
                .entry(addr.to_string())
                .or_default(),
        );
        let mut connection = slot.lock().await;
        if let Some(live) = connection.as_ref().filter(|live| !live.is_closed()) {
            return Ok(live.clone());
        }
        *connection = None;
        let fresh = Connection::connect(addr, self.config.clone()).await?;
        *connection = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forgets the connection to `addr`, so the next user connects again:
    /// for a connection that timed out yet still looks open. Users that
    /// hold it keep it until they drop it.
    pub async fn discard(&self, addr: &str) {
        let slot = self.slots.lock().expect("pool lock").get(addr).cloned();
        if let Some(slot) = slot {
            *slot.lock().await = None;
        }
    }
}
