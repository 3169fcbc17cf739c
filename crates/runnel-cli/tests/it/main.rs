//! Tests of the `runnel` binary, run as a real process.

mod debug;
