//! The fault-injection suite of replication: a three-SPU cluster of real
//! processes behind fault-injecting proxies, a recorded workload of
//! idempotent `acks=all` producers and read-committed consumers, faults
//! (kill -9, SIGSTOP, network cuts, damaged and full disks, SC restarts),
//! and a checker of the history against what every replica holds.
//!
//! - `process`: one `runnel` process, signalled by pid, killed on drop.
//! - `proxy`: the TCP proxy that cuts and delays connections.
//! - `cluster`: SC, SPUs and proxies wired together; waits on the SC's
//!   partition list.
//! - `workload`: producers, consumers and the leadership recorder.
//! - `history`: what the clients did and saw, with timestamps.
//! - `checker`: the pure checker of a history and the final state.
//! - `disk`: replica directories read offline, damaged, or filled.
//! - `scenarios`: one test per fault scenario.

mod checker;
mod cluster;
mod disk;
mod history;
mod process;
mod proxy;
mod scenarios;
mod workload;
