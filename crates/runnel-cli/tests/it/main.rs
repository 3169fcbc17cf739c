//! Tests of the `runnel` binary, run as real processes.

mod cluster;
mod debug;
mod security;
mod support;
