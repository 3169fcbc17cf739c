//! Without idempotence, a produce whose outcome is unknown (sent, then
//! no answer) fails with the records queued behind it, so nothing is
//! stored out of order, and the records sent after go on. (With
//! idempotence it is retried: see `idempotence`.)

use std::time::Duration;

use bytes::Bytes;
use runnel_client::{
    ConsumerConfig, DeliveryFuture, ProduceError, Producer, ProducerConfig, StartFrom,
};
use runnel_types::{Offset, PartitionId, SpuId};
use runnel_wire::batch::{BatchHeader, NO_PRODUCER_ID};

use crate::support::{FakeCluster, SPU, bounded};

async fn send(producer: &Producer, value: &'static str) -> DeliveryFuture {
    producer
        .send(None, Bytes::from_static(value.as_bytes()))
        .await
        .expect("send")
}

/// Asserts `error` says the outcome of a request to SPU `spu` is unknown
/// because of `cause`.
fn assert_outcome_unknown(error: &ProduceError, cause: &str) {
    assert!(
        matches!(error, ProduceError::OutcomeUnknown { spu: SpuId(1), .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.starts_with("outcome unknown: "), "{message}");
    assert!(message.contains(cause), "{message}");
    assert!(
        message.contains(
            "the records may or may not be stored; resend them if duplicates are acceptable"
        ),
        "{message}"
    );
}

fn assert_not_sent_behind_unknown(error: &ProduceError) {
    assert!(
        matches!(error, ProduceError::NotSentAfterUnknownOutcome { spu, .. } if *spu == SPU),
        "{error}"
    );
    assert!(
        error.to_string().contains("this record is not stored"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unanswered_produce_fails_with_the_records_queued_behind_it() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "unanswered", 1).await;
    let config = ProducerConfig {
        delivery_timeout: Duration::from_millis(300),
        linger: Duration::ZERO,
        idempotent: false,
        ..ProducerConfig::default()
    };
    let producer = client.producer(&topic, config).await.expect("producer");
    // Stored by the SPU, never acknowledged.
    cluster.spu.leave_next_produces_unanswered(1);
    let first = send(&producer, "first").await;
    cluster.spu.wait_for_produce_requests(1).await;
    // Queued while the first batch is in flight.
    let queued = [
        send(&producer, "second").await,
        send(&producer, "third").await,
    ];

    let error = bounded("the first delivery", first)
        .await
        .expect_err("no acknowledgement");
    assert_outcome_unknown(&error, "the delivery timeout of 300ms ran out");
    for delivery in queued {
        let error = bounded("a queued delivery", delivery)
            .await
            .expect_err("failed behind the unknown one");
        assert_not_sent_behind_unknown(&error);
    }
    assert_eq!(
        cluster.spu.produce_requests(),
        1,
        "neither retried nor followed by the queued records"
    );

    let later = send(&producer, "later").await;
    let metadata = bounded("the later delivery", later)
        .await
        .expect("records sent afterwards go on");
    assert_eq!(metadata.offset, Offset(1), "after the stored first record");

    let consumer_config = ConsumerConfig {
        start: StartFrom::Beginning,
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut consumer = bounded("consumer", client.consumer(&topic, consumer_config))
        .await
        .expect("consumer");
    let mut values = Vec::new();
    while let Some(record) = bounded("the next record", consumer.next()).await {
        values.push(record.expect("a record").value);
    }
    assert_eq!(values, ["first", "later"], "nothing doubled or reordered");
    assert!(
        cluster.sc.producer_ids_given().is_empty(),
        "no producer id asked for"
    );
    for (_, batch) in cluster.spu.received_batches() {
        let header = BatchHeader::parse(&batch).expect("a batch");
        assert_eq!(header.producer_id, NO_PRODUCER_ID, "not numbered");
    }
}

#[tokio::test]
async fn a_connection_closed_after_sending_leaves_the_outcome_unknown() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "severed", 1).await;
    let config = ProducerConfig {
        linger: Duration::ZERO,
        idempotent: false,
        ..ProducerConfig::default()
    };
    let producer = client.producer(&topic, config).await.expect("producer");
    cluster.spu.leave_next_produces_unanswered(1);
    let first = send(&producer, "first").await;
    cluster.spu.wait_for_produce_requests(1).await;
    let queued = send(&producer, "second").await;
    cluster.restart_spu().await;

    let error = bounded("the first delivery", first)
        .await
        .expect_err("the connection closed");
    assert_outcome_unknown(&error, "the connection broke");
    let error = bounded("the queued delivery", queued)
        .await
        .expect_err("failed behind the unknown one");
    assert_not_sent_behind_unknown(&error);

    let later = producer
        .send_to(PartitionId(0), None, Bytes::from_static(b"later"))
        .await
        .expect("send");
    let metadata = bounded("the later delivery", later)
        .await
        .expect("delivered on a new connection");
    assert_eq!(metadata.offset, Offset(1));
    assert_eq!(cluster.spu.produce_requests(), 2, "first and later only");
}
