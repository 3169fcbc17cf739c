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
    NOT_ENOUGH_REPLICAS = 30, true, "not enough in-sync replicas";
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 31, true, "stored, but the in-sync replicas fell below the minimum before it was committed";
    FENCED_LEADER_EPOCH = 32, true, "leader epoch is older than the current one";
    UNKNOWN_LEADER_EPOCH = 33, true, "leader epoch is newer than this replica knows";
    OUT_OF_ORDER_SEQUENCE = 34, false, "producer sequence number out of order";
    PRODUCER_FENCED = 35, false, "producer epoch is older than the current one";
    INVALID_ISR = 36, false, "invalid in-sync replica change";
    ELECTION_NOT_POSSIBLE = 37, true, "no eligible replica can lead";
    AUTHENTICATION_REQUIRED = 40, false, "authentication required";
    AUTHENTICATION_FAILED = 41, false, "authentication failed";
    PERMISSION_DENIED = 42, false, "permission denied";
    USER_NOT_FOUND = 43, false, "unknown user";
    USER_EXISTS = 44, false, "user already exists";
    ROLE_NOT_FOUND = 45, false, "unknown role";
    ROLE_EXISTS = 46, false, "role already exists";
    INVALID_POLICY = 47, false, "invalid policy";
    INVALID_CSR = 48, false, "invalid certificate signing request";
    SECURITY_DISABLED = 49, false, "security is not enabled on this cluster";
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
