//! Integration tests of runnel-wire, through its public API only: golden
//! vectors from another Kafka implementation, round-trip properties,
//! hostile input, and validation agreeing with decoding.

mod bad_input;
mod golden;
mod round_trip;
mod support;
mod validate;

/// Counts what each test thread allocates, so the decompression-bomb tests
/// can assert how much memory a decode really took.
#[global_allocator]
static ALLOCATOR: support::CountingAllocator = support::CountingAllocator;
