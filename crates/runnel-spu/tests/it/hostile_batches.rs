//! Produced batches the SPU must refuse before storing: decompression
//! bombs, and records that are malformed inside a valid CRC.

use bytes::Bytes;
use runnel_api::{Acks, ErrorCode, OffsetQuery, ProduceRequest};
use runnel_metadata::PartitionKey;
use runnel_transport::Connection;
use runnel_types::Offset;
use runnel_wire::batch::compute_crc;
use runnel_wire::{BatchBuilder, Compression};

use super::{api_error, list_offsets};
use crate::support::*;

/// The decompression limit the SPU runs with here.
const LIMIT: usize = 1 << 20;
/// Where the CRC sits in a RecordBatch v2 header (base offset, batch
/// length, leader epoch, magic, then the CRC of everything after it).
const CRC_POSITION: usize = 17;
const CRC_START: usize = 21;
/// Where the first record starts: right after the 61-byte header.
const FIRST_RECORD: usize = 61;

fn produce_request(key: &PartitionKey) -> ProduceRequest {
    ProduceRequest {
        topic: key.topic.clone(),
        partition: key.partition,
        acks: Acks::All,
        timeout_ms: 30_000,
    }
}

/// One record of `len` zero bytes, compressed with `codec`: a few
/// kilobytes on the wire.
fn zeros(codec: Compression, len: usize) -> Bytes {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as i64;
    let mut builder = BatchBuilder::new(codec);
    builder.push(now_ms, None, Some(vec![0; len]), Vec::new());
    Bytes::from(builder.build().encode().expect("encodable batch"))
}

async fn start() -> (
    std::sync::Arc<FakeSc>,
    TestSpu,
    Connection,
    tempfile::TempDir,
) {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let sc = FakeSc::start(vec![assignment("events", 0, SPU, 0)]).await;
    let spu = TestSpu::start_with(&sc.addr, data.path(), |config| {
        config.max_decompressed_batch_bytes = LIMIT;
    });
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    (sc, spu, connection, data)
}

#[tokio::test]
async fn decompression_bombs_are_refused_and_not_stored() {
    let events = key("events", 0);
    let (_sc, spu, connection, _data) = start().await;
    for codec in [Compression::Gzip, Compression::Zstd] {
        let bomb = zeros(codec, 64 * LIMIT);
        assert!(bomb.len() < LIMIT / 8, "the {codec} bomb is small");
        let refused = api_error(
            connection
                .call_with_tail(&produce_request(&events), bomb)
                .await,
        );
        assert_eq!(refused.code, ErrorCode::RECORDS_TOO_LARGE, "{refused}");
        let expected = format!(
            "partition events-0: batch 1 of the produce request (at byte 0) was refused: its {} payload decompresses past the limit of {LIMIT} bytes",
            codec.name()
        );
        assert!(refused.message.starts_with(&expected), "{refused}");
    }
    // A compressed batch within the limit is taken.
    let fits = zeros(Compression::Gzip, LIMIT / 2);
    let produced = connection
        .call_with_tail(&produce_request(&events), fits)
        .await
        .expect("a batch within the limit");
    assert_eq!(produced.base_offset, Offset(0), "the bombs took no offset");
    let end = list_offsets(&connection, &events, OffsetQuery::End).await;
    assert_eq!(end.offset, Offset(1));
    spu.stop().await;
}

#[tokio::test]
async fn a_malformed_record_inside_a_valid_crc_is_refused() {
    let events = key("events", 0);
    let (_sc, spu, connection, _data) = start().await;
    let good = batch(&["a"]);
    let mut bad = batch(&["x", "y"]).to_vec();
    // The first record: length, attributes, timestamp delta 0, offset
    // delta 0, then its key's length: -1 (null), zig-zag encoded as 1.
    let key_length = FIRST_RECORD + 4;
    assert_eq!(
        bad[FIRST_RECORD + 1..=key_length],
        [0, 0, 0, 1],
        "the record layout"
    );
    // -2: a negative length that is not null.
    bad[key_length] = 3;
    let crc = compute_crc(&bad);
    bad[CRC_POSITION..CRC_START].copy_from_slice(&crc.to_be_bytes());
    let mut request = good.to_vec();
    request.extend_from_slice(&bad);

    let refused = api_error(
        connection
            .call_with_tail(&produce_request(&events), Bytes::from(request))
            .await,
    );
    assert_eq!(refused.code, ErrorCode::INVALID_RECORDS, "{refused}");
    let expected = format!(
        "partition events-0: batch 2 of the produce request (at byte {}) is invalid: record 0 is malformed: key length is negative but not -1 (null)",
        good.len()
    );
    assert!(refused.message.starts_with(&expected), "{refused}");
    // Not even the good batch before it was stored.
    let end = list_offsets(&connection, &events, OffsetQuery::End).await;
    assert_eq!(end.offset, Offset(0));
    spu.stop().await;
}
