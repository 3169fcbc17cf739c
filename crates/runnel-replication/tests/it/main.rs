//! Integration tests of the replication rules through their public API.

mod simulation;
