//! A fault-injecting TCP proxy, in process: one listener forwarding every
//! connection to one upstream address, with faults switched on and off
//! while it runs. `tc netem` is not available on these machines.
//!
//! - Cut: every open connection is closed, and new ones are accepted but
//!   blackholed (held open, nothing forwarded) until the cut heals, then
//!   closed, so a peer sees a partition, not a refusal.
//! - Delay: each chunk is held back this long before it is forwarded, in
//!   both directions; chunks are pipelined, so the delay adds latency
//!   without cutting throughput.
//!
//! Memory is bounded: at most [`MAX_CONNECTIONS`] connections, each with
//! at most [`CHUNKS_IN_FLIGHT`] chunks of [`CHUNK_BYTES`] per direction.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

const MAX_CONNECTIONS: usize = 256;
const CHUNK_BYTES: usize = 16 << 10;
const CHUNKS_IN_FLIGHT: usize = 64;
/// Longest wait for the upstream to accept; a node that is down refuses
/// at once on loopback, a stopped one may not answer at all.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    cut: bool,
    delay: Duration,
}

/// A running proxy; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    faults: watch::Sender<Faults>,
    /// Owns the connection tasks: aborting it drops them all.
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(name: &str, upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("proxy {name}: cannot listen on loopback: {error}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (faults, watching) = watch::channel(Faults::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, watching));
        Proxy {
            addr,
            faults,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and blackholes new ones until healed.
    pub fn cut(&self) {
        self.faults.send_modify(|faults| faults.cut = true);
    }

    /// Ends a cut and removes the delay.
    pub fn heal(&self) {
        self.faults.send_replace(Faults::default());
    }

    /// Holds every chunk back `delay` before forwarding it, from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.faults.send_modify(|faults| faults.delay = delay);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, faults: watch::Receiver<Faults>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let downstream = match accepted {
            Ok((downstream, _)) => downstream,
            // Out of descriptors or an aborted handshake: try again soon.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if connections.len() >= MAX_CONNECTIONS {
            continue;
        }
        connections.spawn(serve(downstream, upstream, faults.clone()));
    }
}

async fn serve(downstream: TcpStream, upstream: SocketAddr, mut faults: watch::Receiver<Faults>) {
    if faults.borrow_and_update().cut {
        // Blackholed: held without a byte forwarded, closed on heal.
        let _ = faults.wait_for(|faults| !faults.cut).await;
        return;
    }
    let connecting = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream));
    let Ok(Ok(upstream)) = connecting.await else {
        return;
    };
    let _ = downstream.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (down_read, down_write) = downstream.into_split();
    let (up_read, up_write) = upstream.into_split();
    let forward = {
        let (inbound, outbound) = (faults.clone(), faults.clone());
        async move {
            tokio::try_join!(
                pipe(down_read, up_write, inbound),
                pipe(up_read, down_write, outbound),
            )
        }
    };
    // A cut drops both sockets, closing the connection on both sides.
    tokio::select! {
        _ = forward => {}
        _ = faults.wait_for(|faults| faults.cut) => {}
    }
}

/// Copies one direction, holding each chunk back by the delay in force
/// when it was read. Ends when the reader ends (after passing the end on)
/// or either side fails.
async fn pipe(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    faults: watch::Receiver<Faults>,
) -> io::Result<()> {
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let read = async move {
        let mut buffer = vec![0; CHUNK_BYTES];
        loop {
            let read = reader.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<_, io::Error>(());
            }
            let due = Instant::now() + faults.borrow().delay;
            if sender.send((due, buffer[..read].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            writer.write_all(&chunk).await?;
        }
        writer.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds every wait of these tests; none is a measurement.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// An upstream that echoes every byte back.
    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                connections.spawn(async move {
                    let (mut reader, mut writer) = socket.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        (addr, task)
    }

    async fn round_trip(socket: &mut TcpStream, message: &[u8]) -> Vec<u8> {
        socket.write_all(message).await.unwrap();
        let mut echoed = vec![0; message.len()];
        tokio::time::timeout(PATIENCE, socket.read_exact(&mut echoed))
            .await
            .expect("the echo comes back")
            .unwrap();
        echoed
    }

    /// Whether the peer closed the connection (end of stream or reset).
    async fn closed(socket: &mut TcpStream) -> bool {
        let mut byte = [0; 1];
        matches!(
            tokio::time::timeout(PATIENCE, socket.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn forwards_both_ways() {
        let (upstream, _server) = echo_server().await;
        let proxy = Proxy::start("echo", upstream).await;
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        let large = vec![7u8; 3 * CHUNK_BYTES + 5];
        assert_eq!(round_trip(&mut socket, b"hello").await, b"hello");
        assert_eq!(round_trip(&mut socket, &large).await, large);
    }

    #[tokio::test]
    async fn a_cut_closes_connections_blackholes_new_ones_and_heals() {
        let (upstream, _server) = echo_server().await;
        let proxy = Proxy::start("echo", upstream).await;
        let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut before, b"one").await, b"one");

        proxy.cut();
        assert!(closed(&mut before).await, "an open connection is closed");
        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        during.write_all(b"two").await.unwrap();
        let mut byte = [0; 1];
        let answer = tokio::time::timeout(Duration::from_millis(300), during.read(&mut byte)).await;
        assert!(
            answer.is_err(),
            "a blackholed connection neither answers nor closes: {answer:?}"
        );

        proxy.heal();
        assert!(closed(&mut during).await, "healing closes the held one");
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut after, b"three").await, b"three");
    }

    #[tokio::test]
    async fn a_delay_holds_every_chunk_back() {
        let (upstream, _server) = echo_server().await;
        let proxy = Proxy::start("echo", upstream).await;
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        let delay = Duration::from_millis(150);
        proxy.set_delay(delay);
        let started = Instant::now();
        assert_eq!(round_trip(&mut socket, b"slow").await, b"slow");
        assert!(
            started.elapsed() >= 2 * delay,
            "held back once each way, took {:?}",
            started.elapsed()
        );

        proxy.heal();
        assert_eq!(round_trip(&mut socket, b"fast").await, b"fast");
    }

    #[tokio::test]
    async fn an_upstream_that_is_down_closes_the_connection() {
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = unused.local_addr().unwrap();
        drop(unused);
        let proxy = Proxy::start("down", upstream).await;
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(closed(&mut socket).await);
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let (upstream, _server) = echo_server().await;
        let proxy = Proxy::start("echo", upstream).await;
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut socket, b"x").await, b"x");
        drop(proxy);
        assert!(closed(&mut socket).await);
    }
}
