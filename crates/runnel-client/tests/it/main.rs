//! End-to-end tests of runnel-client against a fake SC and a fake SPU
//! served on loopback with `runnel_transport` (see `support`): producing
//! and consuming, retries, stream ends, reconnection, ordering after an
//! unknown outcome and error advice.

mod errors;
mod idempotence;
mod ordering;
mod produce_consume;
mod recovery;
mod support;
