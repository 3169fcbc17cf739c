//! Helpers shared by Runnel's test suites.
//!
//! Tests start servers (in-process or as `runnel` processes) on loopback
//! ports they pick beforehand, so a port must be free when picked and stay
//! free until the server binds it. Ports here come from below the kernel's
//! ephemeral range (32768 and up on Linux), where every test's client
//! sockets and `bind(0)` calls take theirs, and from a random start, so
//! tests running at once rarely draw the same one.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where drawn ports start.
const FIRST: u16 = 10_000;
/// How many ports are drawn from: up to the ephemeral range.
const SPAN: u32 = 22_000;

/// A loopback port free right now.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive loopback ports free right now.
///
/// # Panics
///
/// If no such run is found in 1000 draws.
pub fn free_ports(count: u16) -> u16 {
    static DRAWN: AtomicU32 = AtomicU32::new(0);
    for _ in 0..1000 {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos()
            ^ std::process::id().wrapping_mul(2_654_435_761)
            ^ DRAWN.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503);
        let first = FIRST + (seed % (SPAN - u32::from(count))) as u16;
        let free =
            (first..first + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return first;
        }
    }
    panic!("no run of {count} free loopback ports found");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawn_run_can_be_bound_and_lies_below_the_ephemeral_range() {
        let first = free_ports(4);
        assert!((FIRST..32_768 - 4).contains(&first), "{first}");
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
