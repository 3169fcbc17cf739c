//! Helpers shared by Runnel's test suites.
//!
//! Tests start servers (in-process or as `runnel` processes) on loopback
//! ports they pick beforehand, so a port must be free when picked and stay
//! free until the server binds it. Ports here come from below the kernel's
//! ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), where every
//! test's client sockets and `bind(0)` calls take theirs, and from a random
//! start, so tests running at once rarely draw the same one. Rarely, not
//! never: two tests may still draw one port before either binds it, so a
//! server that can be told to retry on fresh ports should be.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where drawn ports start.
const FIRST: u16 = 10_000;
/// Where the ephemeral range starts when the kernel does not say (Linux's
/// default).
const EPHEMERAL_DEFAULT: u16 = 32_768;
/// The fewest ports drawn from, should the ephemeral range start lower.
const SPAN_MIN: u16 = 1_000;

/// A loopback port free right now.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// A listener on a drawn loopback port, holding it until dropped, for a
/// test that hands the port to a server later.
///
/// # Panics
///
/// If no port can be bound in 100 draws.
pub fn reserve_port() -> TcpListener {
    (0..100)
        .find_map(|_| TcpListener::bind(("127.0.0.1", free_port())).ok())
        .expect("a drawn loopback port can be bound")
}

/// The first of `count` consecutive loopback ports free right now.
///
/// # Panics
///
/// If `count` is not below the span drawn from, or no such run is found
/// in 1000 draws.
pub fn free_ports(count: u16) -> u16 {
    static DRAWN: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(ephemeral_start().max(FIRST + SPAN_MIN) - FIRST);
    assert!(u32::from(count) < span, "{count} ports is too many to draw");
    for _ in 0..1000 {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos()
            ^ std::process::id().wrapping_mul(2_654_435_761)
            ^ DRAWN.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503);
        let first = FIRST + (seed % (span - u32::from(count))) as u16;
        let free =
            (first..first + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return first;
        }
    }
    panic!("no run of {count} free loopback ports found");
}

/// The first port the kernel hands out to client sockets and `bind(0)`.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawn_run_can_be_bound_and_lies_below_the_ephemeral_range() {
        let first = free_ports(4);
        assert!(first >= FIRST, "{first}");
        assert!(
            first + 4 <= ephemeral_start().max(FIRST + SPAN_MIN),
            "{first}"
        );
        let held: Vec<TcpListener> = (first..first + 4)
            .map(|port| TcpListener::bind(("127.0.0.1", port)).expect("the drawn port is free"))
            .collect();
        assert_eq!(held.len(), 4);
    }

    #[test]
    fn a_port_in_use_is_never_drawn() {
        let held: Vec<TcpListener> = (0..200)
            .map(|_| {
                let port = free_port();
                TcpListener::bind(("127.0.0.1", port)).expect("the drawn port is free")
            })
            .collect();
        let mut ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().expect("address").port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 200, "a port held was drawn again");
    }
}
