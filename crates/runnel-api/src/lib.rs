//! Every request and response of Runnel's native protocol, as typed
//! messages. Pure: bytes in, values out.
//!
//! A message body is the [postcard] encoding of the message struct (a
//! compact, documented serde format: varint integers, length-prefixed
//! strings and sequences). Two messages carry record batches: their batch
//! bytes follow the encoded struct unchanged, as the frame's *tail*, so a
//! produce is appended as received and a fetch is sent from the file
//! without a copy. `docs/wire.md` lists every message.
//!
//! Versions: each api has a version range ([`ApiKey::versions`]); all
//! are at version 0 today. A response is `Result<T, ApiError>`.
//!
//! [postcard]: https://postcard.jamesmunns.com/wire-format

mod error;
mod messages;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{ApiError, ErrorCode};
pub use messages::*;
use runnel_wire::WireError;

/// Which listener an api is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    ScPublic,
    ScPrivate,
    SpuPublic,
    /// Every listener answers it.
    Any,
}

macro_rules! api_keys {
    ($($name:ident = $value:literal, $listener:ident;)*) => {
        /// The api of a request. Values are never reused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ApiKey {
            $($name = $value,)*
        }

        impl ApiKey {
            pub const ALL: &[ApiKey] = &[$(ApiKey::$name,)*];

            pub fn from_u16(value: u16) -> Option<ApiKey> {
                match value {
                    $($value => Some(ApiKey::$name),)*
                    _ => None,
                }
            }

            pub fn listener(self) -> Listener {
                match self {
                    $(ApiKey::$name => Listener::$listener,)*
                }
            }
        }
    };
}

api_keys! {
    ApiVersions = 0, Any;
    CreateTopic = 10, ScPublic;
    DeleteTopic = 11, ScPublic;
    ListTopics = 12, ScPublic;
    ListPartitions = 13, ScPublic;
    ListSpus = 14, ScPublic;
    RegisterSpu = 15, ScPublic;
    UnregisterSpu = 16, ScPublic;
    WatchMetadata = 17, ScPublic;
    SpuConnect = 30, ScPrivate;
    SpuHeartbeat = 31, ScPrivate;
    Produce = 50, SpuPublic;
    StreamFetch = 51, SpuPublic;
    ListOffsets = 52, SpuPublic;
}

impl ApiKey {
    /// Oldest and newest version of this api that this build speaks.
    pub fn versions(self) -> (u16, u16) {
        (0, 0)
    }
}

/// A request type: its api key, and what comes back (one reply, or a
/// stream of items).
pub trait Request: Serialize + DeserializeOwned {
    const API_KEY: ApiKey;
    /// The reply, or each item of a stream.
    type Response: Serialize + DeserializeOwned;
    /// Whether the answer is a stream of `Response` items.
    const STREAMING: bool = false;
}

/// Encodes a message body.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_stdvec(message).expect("encoding to a Vec cannot fail")
}

/// Appends a message body to `out`.
pub fn encode_into<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    let encoded = postcard::to_extend(message, std::mem::take(out));
    *out = encoded.expect("encoding to a Vec cannot fail");
}

/// Decodes a message body that must be exactly one message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (message, tail) = decode_with_tail(body)?;
    if !tail.is_empty() {
        return Err(WireError::MalformedBody(format!(
            "{} bytes follow the message",
            tail.len()
        )));
    }
    Ok(message)
}

/// Decodes a message and returns the bytes that follow it (record
/// batches, for produce requests and fetch items).
pub fn decode_with_tail<T: DeserializeOwned>(body: &[u8]) -> Result<(T, &[u8]), WireError> {
    postcard::take_from_bytes(body).map_err(|error| WireError::MalformedBody(error.to_string()))
}
