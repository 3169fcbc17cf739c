//! The replication rules of one partition, as a pure state machine: no
//! sockets, no clock, no async, no I/O. The SPU feeds it what happened
//! (the leader's own log end, follower positions, the time, the SC's
//! answers) and carries out the [`Action`]s it returns; a follower asks
//! [`divergence_question`] and [`on_epoch_end`] where its log must be cut.
//! Kept apart so the rules can be tested exhaustively and in deterministic
//! simulation (see `tests/it/simulation.rs`).
//!
//! The model is Kafka's: an ISR (in-sync replica set) committed by the SC,
//! a high watermark (HW) that only records every in-sync replica holds may
//! pass, leader epochs that fence old leaders (KIP-101, KIP-279), and ISR
//! changes proposed by the leader one at a time and counted the safe way
//! while in flight (KIP-497).
//!
//! # Invariants
//!
//! On a [`Leader`], for one leader epoch:
//!
//! - The HW never exceeds the leader's committable end, never moves
//!   backwards, and rises only to an offset every member of the *maximal*
//!   ISR has reported reaching in this epoch. The maximal ISR is the committed ISR plus
//!   every member of the proposal in flight: a member proposed out still
//!   counts until the SC commits its removal, a member proposed in counts
//!   from the moment it is proposed. Whatever ISR the SC ends up holding,
//!   every member of it holds every record below the HW.
//! - A member whose end is not yet known in this epoch holds the HW where
//!   it is.
//! - A proposal never removes the leader, never leaves the ISR empty, and
//!   at most one is in flight.
//! - A follower is proposed into the ISR only once it holds everything
//!   below the HW and everything written before this epoch began, so it
//!   holds every record acknowledged in earlier epochs too.
//! - `acks=all` is acknowledged only below the HW and only while the
//!   committed ISR has at least `min_in_sync` members; it is never
//!   acknowledged for records some committed member lacks.
//!
//! For a follower:
//!
//! - It cuts its log at the end of the largest epoch it shares with the
//!   leader, as far as both hold that epoch: exactly where the two logs
//!   stop agreeing, never at a locally cached HW. When the leader holds no
//!   epoch that old, the follower keeps nothing and starts over at the
//!   leader's log start. Each further question asks about a strictly lower
//!   epoch the follower holds, so the exchange ends within as many rounds
//!   as it has epochs.
//!
//! What the caller guarantees:
//!
//! - A follower reports positions for an epoch only after it has cut its
//!   log against that epoch's leader, so the records below any reported
//!   end are the leader's; and one follower's positions reach the leader
//!   in the order it sent them. A reported end is only as durable as the
//!   follower's flush policy makes it: a follower that loses reported
//!   records in a power failure weakens every guarantee above.
//! - The SC's ISR commits reach [`Leader::on_isr_committed`] in the order
//!   the SC made them, and every [`Action::ProposeIsr`] gets one definite
//!   answer: a lost answer is asked for again, never taken for a refusal.
//! - The SC adds a member to the ISR only on a leader's proposal; its own
//!   changes only remove members. A leader that restarts gets a new epoch.

mod divergence;
mod leader;

pub use divergence::{Divergence, EpochEndError, divergence_question, on_epoch_end};
pub use leader::{AckState, Action, Leader, LeaderConfig, PositionError, ProposalId};
