//! Feeds arbitrary bytes to everything a server or client decodes from a
//! peer before any handler runs: the frame length check, the request and
//! response headers, and every message body. Nothing may panic or
//! allocate past the input, and whatever decodes must encode back to a
//! body that decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_api::*;
use runnel_metadata::{AssignmentUpdate, MetadataUpdate};
use runnel_wire::frame::{
    LENGTH_PREFIX_LEN, REQUEST_HEADER_FIXED_LEN, RESPONSE_HEADER_LEN, RequestHeader,
    ResponseHeader, frame_length,
};

const MAX_FRAME: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<LENGTH_PREFIX_LEN>() {
        if let Ok(length) = frame_length(*prefix, REQUEST_HEADER_FIXED_LEN, MAX_FRAME) {
            assert!((REQUEST_HEADER_FIXED_LEN..=MAX_FRAME).contains(&length));
        }
    }
    if let Ok((header, body_at)) = RequestHeader::decode(data) {
        assert!(body_at <= data.len());
        let mut encoded = Vec::new();
        header.encode(&mut encoded);
        assert_eq!(&encoded[..], &data[..body_at]);
        body(header.api_key, &data[body_at..]);
    }
    if let Ok(header) = ResponseHeader::decode(data) {
        assert!(data.len() >= RESPONSE_HEADER_LEN);
        let mut encoded = Vec::new();
        header.encode(&mut encoded);
        assert_eq!(&encoded[..], &data[..RESPONSE_HEADER_LEN]);
    }
    // Every message type, whatever the header said.
    for key in ApiKey::ALL {
        body(*key as u16, data);
    }
});

/// Decodes `bytes` as the request of `api_key` and as its answers.
fn body(api_key: u16, bytes: &[u8]) {
    match ApiKey::from_u16(api_key) {
        Some(ApiKey::ApiVersions) => round_trip::<ApiVersionsRequest, Reply<ApiVersionsResponse>>(bytes),
        Some(ApiKey::CreateTopic) => round_trip::<CreateTopicRequest, Reply<()>>(bytes),
        Some(ApiKey::DeleteTopic) => round_trip::<DeleteTopicRequest, Reply<()>>(bytes),
        Some(ApiKey::ListTopics) => round_trip::<ListTopicsRequest, Reply<Vec<runnel_metadata::Topic>>>(bytes),
        Some(ApiKey::ListPartitions) => {
            round_trip::<ListPartitionsRequest, Reply<Vec<runnel_metadata::Partition>>>(bytes)
        }
        Some(ApiKey::ListSpus) => round_trip::<ListSpusRequest, Reply<Vec<runnel_metadata::Spu>>>(bytes),
        Some(ApiKey::RegisterSpu) => round_trip::<RegisterSpuRequest, Reply<()>>(bytes),
        Some(ApiKey::UnregisterSpu) => round_trip::<UnregisterSpuRequest, Reply<()>>(bytes),
        Some(ApiKey::WatchMetadata) => round_trip::<WatchMetadataRequest, MetadataUpdate>(bytes),
        Some(ApiKey::InitProducerId) => round_trip::<InitProducerIdRequest, Reply<ProducerIdentity>>(bytes),
        Some(ApiKey::ElectPreferred) => round_trip::<ElectPreferredRequest, Reply<Vec<ElectionResult>>>(bytes),
        Some(ApiKey::AlterIsr) => round_trip::<AlterIsrRequest, Reply<Vec<runnel_types::SpuId>>>(bytes),
        Some(ApiKey::ReplicaSync) => {
            tail_round_trip::<SyncItem>(bytes);
            round_trip::<ReplicaSyncRequest, Result<(), ApiError>>(bytes);
        }
        Some(ApiKey::ReplicaPositions) => round_trip::<ReplicaPositionsRequest, Reply<()>>(bytes),
        Some(ApiKey::FetchEpochEnd) => round_trip::<FetchEpochEndRequest, Reply<EpochEnd>>(bytes),
        Some(ApiKey::SpuConnect) => round_trip::<SpuConnectRequest, AssignmentUpdate>(bytes),
        Some(ApiKey::SpuHeartbeat) => round_trip::<SpuHeartbeatRequest, Reply<()>>(bytes),
        Some(ApiKey::Produce) => {
            tail_round_trip::<ProduceRequest>(bytes);
            round_trip::<ProduceRequest, Reply<ProduceResponse>>(bytes);
        }
        Some(ApiKey::StreamFetch) => {
            tail_round_trip::<FetchItem>(bytes);
            round_trip::<StreamFetchRequest, Result<(), ApiError>>(bytes);
        }
        Some(ApiKey::ListOffsets) => round_trip::<ListOffsetsRequest, Reply<ListOffsetsResponse>>(bytes),
        Some(ApiKey::Login) => round_trip::<LoginRequest, Reply<LoginResponse>>(bytes),
        Some(ApiKey::UserAdd) => round_trip::<UserAddRequest, Reply<()>>(bytes),
        Some(ApiKey::UserList) => round_trip::<UserListRequest, Reply<Vec<UserInfo>>>(bytes),
        Some(ApiKey::UserDelete) => round_trip::<UserDeleteRequest, Reply<()>>(bytes),
        Some(ApiKey::UserPasswd) => round_trip::<UserPasswdRequest, Reply<()>>(bytes),
        Some(ApiKey::UserRevoke) => round_trip::<UserRevokeRequest, Reply<RevokeResponse>>(bytes),
        Some(ApiKey::RoleCreate) => round_trip::<RoleCreateRequest, Reply<()>>(bytes),
        Some(ApiKey::RoleBind) => round_trip::<RoleBindRequest, Reply<()>>(bytes),
        Some(ApiKey::RoleList) => round_trip::<RoleListRequest, Reply<runnel_auth::Policy>>(bytes),
        Some(ApiKey::ApplyPolicy) => round_trip::<ApplyPolicyRequest, Reply<ApplyPolicyResponse>>(bytes),
        None => {}
    }
}

fn round_trip<Q, A>(bytes: &[u8])
where
    Q: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    A: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    check::<Q>(bytes);
    check::<A>(bytes);
}

fn check<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(message) = decode::<T>(bytes) {
        let again = decode::<T>(&encode(&message)).expect("our own encoding decodes");
        assert_eq!(again, message);
    }
}

fn tail_round_trip<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok((message, tail)) = decode_with_tail::<T>(bytes) {
        assert!(tail.len() <= bytes.len());
        let mut encoded = encode(&message);
        encoded.extend_from_slice(tail);
        let (again, again_tail) = decode_with_tail::<T>(&encoded).expect("our own encoding decodes");
        assert_eq!(again, message);
        assert_eq!(again_tail, tail);
    }
}
