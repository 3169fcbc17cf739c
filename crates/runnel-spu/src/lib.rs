//! The Streaming Processing Unit (SPU).
