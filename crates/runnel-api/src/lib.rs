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
mod security;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{ApiError, ErrorCode};
pub use messages::*;
use runnel_wire::WireError;
pub use security::*;

/// Which listener an api is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    ScPublic,
    ScPrivate,
    SpuPublic,
    SpuPrivate,
    /// Every listener answers it.
    Any,
}

macro_rules! api_keys {
    ($($name:ident = $value:literal, $listener:ident, $streaming:literal;)*) => {
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

            /// Whether the answer is a stream of items (ended by an End
            /// frame) rather than one reply.
            pub fn is_streaming(self) -> bool {
                match self {
                    $(ApiKey::$name => $streaming,)*
                }
            }
        }
    };
}

api_keys! {
    ApiVersions = 0, Any, false;
    CreateTopic = 10, ScPublic, false;
    DeleteTopic = 11, ScPublic, false;
    ListTopics = 12, ScPublic, false;
    ListPartitions = 13, ScPublic, false;
    ListSpus = 14, ScPublic, false;
    RegisterSpu = 15, ScPublic, false;
    UnregisterSpu = 16, ScPublic, false;
    WatchMetadata = 17, ScPublic, true;
    InitProducerId = 18, ScPublic, false;
    ElectPreferred = 19, ScPublic, false;
    Login = 20, ScPublic, false;
    UserAdd = 21, ScPublic, false;
    UserList = 22, ScPublic, false;
    UserDelete = 23, ScPublic, false;
    UserPasswd = 24, ScPublic, false;
    UserRevoke = 25, ScPublic, false;
    RoleCreate = 26, ScPublic, false;
    RoleBind = 27, ScPublic, false;
    RoleList = 28, ScPublic, false;
    ApplyPolicy = 29, ScPublic, false;
    SpuConnect = 30, ScPrivate, true;
    SpuHeartbeat = 31, ScPrivate, false;
    AlterIsr = 32, ScPrivate, false;
    Produce = 50, SpuPublic, false;
    StreamFetch = 51, SpuPublic, true;
    ListOffsets = 52, SpuPublic, false;
    ReplicaSync = 70, SpuPrivate, true;
    ReplicaPositions = 71, SpuPrivate, false;
    FetchEpochEnd = 72, SpuPrivate, false;
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

/// The apis a listener serving `served` answers, with their versions.
pub fn api_versions(served: &[Listener]) -> ApiVersionsResponse {
    let versions = ApiKey::ALL
        .iter()
        .filter(|key| served.contains(&key.listener()))
        .map(|&key| {
            let (min_version, max_version) = key.versions();
            ApiVersion {
                api_key: key as u16,
                min_version,
                max_version,
            }
        })
        .collect();
    ApiVersionsResponse { versions }
}

/// The api of a request if a listener serving `served` speaks it in the
/// requested version; otherwise the error to answer with. `listener_name`
/// names the listener in the message ("the SC's public listener").
pub fn check_served(
    api_key: u16,
    api_version: u16,
    served: &[Listener],
    listener_name: &str,
) -> Result<ApiKey, ApiError> {
    let Some(key) = ApiKey::from_u16(api_key) else {
        return Err(ApiError::new(
            ErrorCode::UNSUPPORTED_API,
            format!(
                "api key {api_key} is unknown to {listener_name}; upgrade the server or use an \
                 api it lists in ApiVersions"
            ),
        ));
    };
    if !served.contains(&key.listener()) {
        return Err(ApiError::new(
            ErrorCode::UNSUPPORTED_API,
            format!(
                "{key:?} is not served on {listener_name}; send it to the listener that serves \
                 it (see ApiVersions)"
            ),
        ));
    }
    let (min_version, max_version) = key.versions();
    if !(min_version..=max_version).contains(&api_version) {
        return Err(ApiError::new(
            ErrorCode::UNSUPPORTED_API,
            format!(
                "{key:?} version {api_version} is not supported by {listener_name} (it speaks \
                 {min_version} to {max_version}); upgrade the server or downgrade the client"
            ),
        ));
    }
    Ok(key)
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

#[cfg(test)]
mod tests {
    use runnel_metadata::{
        MetadataUpdate, Object, PartitionKey, Spu, SpuSpec, Topic, TopicConfig, TopicSpec,
        TopicState,
    };
    use runnel_types::{LeaderEpoch, Offset, PartitionId, SpuId, TopicName};

    use super::*;

    fn round_trip<R: Request + PartialEq + std::fmt::Debug>(request: R) {
        assert_eq!(
            R::API_KEY.is_streaming(),
            R::STREAMING,
            "{:?}: the key table and the request type agree",
            R::API_KEY
        );
        let bytes = encode(&request);
        assert_eq!(decode::<R>(&bytes).unwrap(), request);
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(b"batches");
        let (decoded, tail) = decode_with_tail::<R>(&with_tail).unwrap();
        assert_eq!((decoded, tail), (request, &b"batches"[..]));
        assert!(
            decode::<R>(&with_tail).is_err(),
            "trailing bytes are refused"
        );
    }

    #[test]
    fn every_request_round_trips() {
        let topic = TopicName::new("orders").unwrap();
        let spec = SpuSpec {
            id: SpuId(2),
            public_addr: "127.0.0.1:9005".into(),
            private_addr: "127.0.0.1:9006".into(),
            rack: Some("a".into()),
        };
        round_trip(ApiVersionsRequest {});
        round_trip(CreateTopicRequest {
            spec: TopicSpec {
                name: topic.clone(),
                partitions: 6,
                replication_factor: 1,
                config: TopicConfig::default(),
            },
        });
        round_trip(DeleteTopicRequest {
            name: topic.clone(),
        });
        round_trip(ListTopicsRequest {
            names: vec![topic.clone()],
        });
        round_trip(ListPartitionsRequest {
            topic: Some(topic.clone()),
        });
        round_trip(ListSpusRequest {});
        round_trip(RegisterSpuRequest { spec: spec.clone() });
        round_trip(UnregisterSpuRequest { id: SpuId(2) });
        round_trip(WatchMetadataRequest {});
        round_trip(SpuConnectRequest { spec: spec.clone() });
        round_trip(SpuHeartbeatRequest {
            id: SpuId(2),
            replicas: Vec::new(),
        });
        round_trip(ProduceRequest {
            topic: topic.clone(),
            partition: PartitionId(3),
            acks: Acks::Leader,
            timeout_ms: 30_000,
        });
        round_trip(StreamFetchRequest {
            topic: topic.clone(),
            partition: PartitionId(3),
            offset: Offset(42),
            max_bytes: 1 << 20,
        });
        let key = PartitionKey {
            topic: topic.clone(),
            partition: PartitionId(3),
        };
        round_trip(InitProducerIdRequest {});
        round_trip(ElectPreferredRequest {
            topic: Some(topic.clone()),
            partition: None,
        });
        round_trip(AlterIsrRequest {
            spu: SpuId(1),
            key: key.clone(),
            leader_epoch: LeaderEpoch(4),
            current_isr: vec![SpuId(1), SpuId(2)],
            new_isr: vec![SpuId(1)],
        });
        round_trip(ReplicaSyncRequest {
            follower: SpuId(2),
            partitions: vec![SyncPartition {
                key: key.clone(),
                leader_epoch: LeaderEpoch(4),
                offset: Offset(100),
            }],
        });
        round_trip(ReplicaPositionsRequest {
            follower: SpuId(2),
            positions: vec![ReplicaPosition {
                key: key.clone(),
                leader_epoch: LeaderEpoch(4),
                log_end_offset: Offset(120),
            }],
        });
        round_trip(FetchEpochEndRequest {
            key,
            leader_epoch: LeaderEpoch(4),
            epoch: LeaderEpoch(3),
        });
        round_trip(ListOffsetsRequest {
            topic: topic.clone(),
            partition: PartitionId(3),
            query: OffsetQuery::Timestamp(-1),
        });

        let update = MetadataUpdate::Snapshot {
            version: 7,
            objects: vec![
                Object::Spu(Spu { spec, online: true }),
                Object::Topic(Topic {
                    spec: TopicSpec {
                        name: topic,
                        partitions: 1,
                        replication_factor: 1,
                        config: TopicConfig::default(),
                    },
                    topic_id: 1,
                    state: TopicState::Pending {
                        reason: "no SPU".into(),
                    },
                }),
            ],
        };
        assert_eq!(decode::<MetadataUpdate>(&encode(&update)).unwrap(), update);
        let reply: Reply<ProduceResponse> = Err(ApiError::new(ErrorCode::NOT_LEADER, "moved"));
        assert_eq!(
            decode::<Reply<ProduceResponse>>(&encode(&reply)).unwrap(),
            reply
        );
    }

    #[test]
    fn the_produce_example_of_docs_wire_md_encodes_as_written() {
        let request = ProduceRequest {
            topic: TopicName::new("events").unwrap(),
            partition: PartitionId(3),
            acks: Acks::All,
            timeout_ms: 30_000,
        };
        assert_eq!(
            encode(&request),
            [
                6, b'e', b'v', b'e', b'n', b't', b's', 3, 0, 0xb0, 0xea, 0x01
            ]
        );
        assert_eq!("leader".parse::<Acks>(), Ok(Acks::Leader));
        assert!(
            "most"
                .parse::<Acks>()
                .unwrap_err()
                .contains("all, leader or none")
        );
    }

    #[test]
    fn a_listener_answers_only_its_apis() {
        let public = [Listener::Any, Listener::SpuPublic];
        assert_eq!(check_served(50, 0, &public, "the SPU"), Ok(ApiKey::Produce));
        for (key, version) in [(10, 0), (999, 0), (50, 9)] {
            let error = check_served(key, version, &public, "the SPU").unwrap_err();
            assert_eq!(error.code, ErrorCode::UNSUPPORTED_API, "{key} v{version}");
        }
        let listed: Vec<u16> = api_versions(&public)
            .versions
            .iter()
            .map(|version| version.api_key)
            .collect();
        assert_eq!(listed, [0, 50, 51, 52]);
    }
}
