//! Error codes sent to clients. A code is never reused: a retired code is
//! a gap, not free space.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A numeric error code; unknown codes from newer peers decode too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

macro_rules! error_codes {
    ($($name:ident = $value:literal, $retriable:literal, $text:literal;)*) => {
        impl ErrorCode {
            $(pub const $name: ErrorCode = ErrorCode($value);)*

            /// Whether retrying the same request later can succeed.
            pub fn is_retriable(self) -> bool {
                match self.0 {
                    $($value => $retriable,)*
                    _ => false,
                }
            }

            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "unknown error",
                }
            }
        }
    };
}

error_codes! {
    UNKNOWN = 1, false, "unknown server error";
    MALFORMED_REQUEST = 2, false, "malformed request";
    UNSUPPORTED_API = 3, false, "unsupported api or version";
    TOPIC_NOT_FOUND = 10, false, "unknown topic";
    TOPIC_EXISTS = 11, false, "topic already exists";
    INVALID_TOPIC = 12, false, "invalid topic";
    INVALID_CONFIG = 13, false, "invalid configuration";
    PARTITION_NOT_FOUND = 14, false, "unknown partition";
    REPLICATION_UNSUPPORTED = 15, false, "replication factor not supported yet";
    SPU_NOT_FOUND = 16, false, "unknown SPU";
    SPU_IN_USE = 17, false, "SPU still in use";
    NOT_LEADER = 20, true, "not the leader for this partition";
    PARTITION_NOT_READY = 21, true, "partition not ready";
    OFFSET_OUT_OF_RANGE = 22, false, "offset out of range";
    INVALID_RECORDS = 23, false, "invalid record batch";
    RECORDS_TOO_LARGE = 24, false, "record batch too large";
    STORAGE = 25, false, "storage error";
    CORRUPT_DATA = 26, false, "corrupt data on the server";
    TIMEOUT = 27, true, "request timed out";
    SHUTTING_DOWN = 28, true, "server shutting down";
    TOO_MANY_REQUESTS = 29, true, "too many requests in progress on this connection";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// An error answer: a code for programs, a message for people that says
/// what went wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}
