//! Integration tests of runnel-transport through its public API: a real
//! server on loopback TCP (and the generic byte-stream path over an
//! in-memory pipe) with a test handler that serves a few runnel-api
//! requests, plus raw sockets that speak the frame format by hand to act as
//! a hostile or broken peer.

mod hostile_peers;
mod lifecycle;
mod streams;
mod support;
mod tls;
mod unary;
