//! The Streaming Controller (SC).
