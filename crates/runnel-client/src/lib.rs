//! The Runnel client library.
