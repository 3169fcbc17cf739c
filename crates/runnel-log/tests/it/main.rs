//! Integration tests of the partition log, through its public API and its
//! files on disk.

mod basics;
mod crash;
mod model;
mod retention;
mod support;
