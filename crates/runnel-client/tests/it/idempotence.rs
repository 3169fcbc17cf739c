//! The idempotent producer (the default): it numbers each partition's
//! records under a producer id from the SC, resends an unanswered batch
//! byte for byte (the leader stores it once), fails a batch refused as
//! out of sequence with those queued behind it, and starts the next
//! epoch from sequence 0 after any failed batch.

use std::time::Duration;

use bytes::Bytes;
use runnel_api::ErrorCode;
use runnel_client::{
    ClientError, ConsumerConfig, DeliveryFuture, ProduceError, Producer, ProducerConfig,
    RunnelClient, StartFrom,
};
use runnel_transport::TransportConfig;
use runnel_types::{Offset, PartitionId, TopicName};
use runnel_wire::batch::BatchHeader;

use crate::support::{FakeCluster, bounded};

async fn send_to(producer: &Producer, partition: u32, value: &'static str) -> DeliveryFuture {
    producer
        .send_to(
            PartitionId(partition),
            None,
            Bytes::from_static(value.as_bytes()),
        )
        .await
        .expect("send")
}

/// Producer id, epoch, base sequence and record count of every batch the
/// SPU received, in order, with its partition.
fn numbering(cluster: &FakeCluster) -> Vec<(u32, i64, i16, i32, i32)> {
    cluster
        .spu
        .received_batches()
        .iter()
        .map(|(partition, batch)| {
            let header = BatchHeader::parse(batch).expect("a batch");
            (
                partition.0,
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.record_count,
            )
        })
        .collect()
}

/// Every value stored in partition 0 of `topic`, in offset order.
async fn stored_values(client: &RunnelClient, topic: &TopicName) -> Vec<Bytes> {
    let config = ConsumerConfig {
        start: StartFrom::Beginning,
        stop_at_end: true,
        partitions: Some(vec![PartitionId(0)]),
        ..ConsumerConfig::default()
    };
    let mut consumer = bounded("consumer", client.consumer(topic, config))
        .await
        .expect("consumer");
    let mut values = Vec::new();
    while let Some(record) = bounded("the next record", consumer.next()).await {
        values.push(record.expect("a record").value);
    }
    values
}

#[tokio::test]
async fn batches_carry_the_producer_id_and_consecutive_sequences() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "numbered", 2).await;
    let config = ProducerConfig {
        linger: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = client.producer(&topic, config).await.expect("producer");
    assert_eq!(cluster.sc.producer_ids_given(), [1000]);
    // Each flush seals what was sent before it as one batch a partition.
    let rounds: [&[(u32, &'static str)]; 3] = [
        &[(0, "a"), (0, "b"), (0, "c")],
        &[(0, "d"), (1, "x"), (0, "e")],
        &[(0, "f")],
    ];
    let mut deliveries = Vec::new();
    for round in rounds {
        for &(partition, value) in round {
            deliveries.push(send_to(&producer, partition, value).await);
        }
        bounded("flush", producer.flush()).await.expect("flush");
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        let metadata = bounded("delivery", delivery).await.expect("delivered");
        offsets.push((metadata.partition.0, metadata.offset.0));
    }
    assert_eq!(
        offsets,
        [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (0, 4), (0, 5)]
    );
    let mut batches = numbering(&cluster);
    batches.sort_by_key(|batch| batch.0);
    assert_eq!(
        batches,
        [
            (0, 1000, 0, 0, 3),
            (0, 1000, 0, 3, 2),
            (0, 1000, 0, 5, 1),
            (1, 1000, 0, 0, 1),
        ],
        "(partition, producer id, epoch, base sequence, records)"
    );
}

/// Leaves the first batch unanswered, ends that attempt with `cut_off`,
/// and checks that it is resent byte for byte, stored once, and that
/// the batch queued behind it follows in sequence.
async fn unanswered_batch_is_resent(
    cluster: &FakeCluster,
    client: &RunnelClient,
    cut_off: impl AsyncFnOnce(),
) {
    let topic = cluster.create_topic(client, "resent", 1).await;
    let config = ProducerConfig {
        linger: Duration::ZERO,
        ..ProducerConfig::default()
    };
    let producer = client.producer(&topic, config).await.expect("producer");
    // Stored by the SPU, never acknowledged.
    cluster.spu.leave_next_produces_unanswered(1);
    let first = send_to(&producer, 0, "first").await;
    cluster.spu.wait_for_produce_requests(1).await;
    let queued = send_to(&producer, 0, "second").await;
    cut_off().await;

    let metadata = bounded("the first delivery", first)
        .await
        .expect("acknowledged after a retry");
    assert_eq!(metadata.offset, Offset(0), "the offset it was stored at");
    let metadata = bounded("the queued delivery", queued)
        .await
        .expect("sent after it");
    assert_eq!(metadata.offset, Offset(1));

    let received = cluster.spu.received_batches();
    assert_eq!(received.len(), 3, "first, its retry, second");
    assert_eq!(received[1], received[0], "the retry is the same bytes");
    assert_eq!(
        numbering(cluster),
        [(0, 1000, 0, 0, 1), (0, 1000, 0, 0, 1), (0, 1000, 0, 1, 1)]
    );
    assert_eq!(
        stored_values(client, &topic).await,
        ["first", "second"],
        "stored once, in order"
    );
}

#[tokio::test]
async fn a_batch_whose_connection_broke_is_resent_byte_for_byte() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    unanswered_batch_is_resent(&cluster, &client, async || cluster.restart_spu().await).await;
}

#[tokio::test]
async fn a_batch_whose_request_timed_out_is_resent_byte_for_byte() {
    let cluster = FakeCluster::start().await;
    let transport = TransportConfig {
        request_timeout: Duration::from_millis(200),
        ..TransportConfig::default()
    };
    let client = bounded(
        "connecting",
        RunnelClient::connect_with(&cluster.sc_addr, transport),
    )
    .await
    .expect("connect to the fake SC");
    unanswered_batch_is_resent(&cluster, &client, async || {}).await;
}

#[tokio::test]
async fn a_batch_unanswered_past_the_delivery_timeout_is_of_unknown_outcome() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "expired", 1).await;
    let config = ProducerConfig {
        delivery_timeout: Duration::from_millis(300),
        linger: Duration::ZERO,
        ..ProducerConfig::default()
    };
    let producer = client.producer(&topic, config).await.expect("producer");
    cluster.spu.leave_next_produces_unanswered(1);
    let first = send_to(&producer, 0, "first").await;
    cluster.spu.wait_for_produce_requests(1).await;
    let queued = send_to(&producer, 0, "second").await;

    let error = bounded("the first delivery", first)
        .await
        .expect_err("no acknowledgement");
    assert!(
        matches!(error, ProduceError::OutcomeUnknown { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("the delivery timeout of 300ms ran out"),
        "{error}"
    );
    let error = bounded("the queued delivery", queued)
        .await
        .expect_err("failed behind it");
    assert!(
        matches!(error, ProduceError::NotSentAfterUnknownOutcome { .. }),
        "{error}"
    );

    let later = send_to(&producer, 0, "later").await;
    let metadata = bounded("the later delivery", later)
        .await
        .expect("records sent afterwards go on");
    assert_eq!(metadata.offset, Offset(1));
    assert_eq!(
        numbering(&cluster),
        [(0, 1000, 0, 0, 1), (0, 1000, 1, 0, 1)],
        "the next epoch, from sequence 0"
    );
}

#[tokio::test]
async fn a_batch_refused_as_out_of_sequence_fails_with_those_queued_behind_it() {
    for code in [ErrorCode::OUT_OF_ORDER_SEQUENCE, ErrorCode::PRODUCER_FENCED] {
        let cluster = FakeCluster::start().await;
        let client = cluster.client().await;
        let topic = cluster.create_topic(&client, "refused", 1).await;
        let config = ProducerConfig {
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        };
        let producer = client.producer(&topic, config).await.expect("producer");
        cluster.spu.hold_next_produce();
        cluster.spu.refuse_next_produces_with(1, code);
        let first = send_to(&producer, 0, "first").await;
        cluster.spu.wait_for_produce_requests(1).await;
        let queued = [
            send_to(&producer, 0, "second").await,
            send_to(&producer, 0, "third").await,
        ];
        cluster.spu.release_held_produce();

        let error = bounded("the first delivery", first)
            .await
            .expect_err("refused");
        assert!(
            matches!(&error, ProduceError::Rejected { error, .. } if error.code == code),
            "{error}"
        );
        for delivery in queued {
            let error = bounded("a queued delivery", delivery)
                .await
                .expect_err("failed behind the refused one");
            assert!(
                matches!(&error, ProduceError::NotSentAfterSequenceError { error, .. } if error.code == code),
                "{error}"
            );
            let message = error.to_string();
            assert!(message.contains("this record is not stored"), "{message}");
        }
        assert_eq!(cluster.spu.produce_requests(), 1, "nothing retried");

        let later = send_to(&producer, 0, "later").await;
        let metadata = bounded("the later delivery", later)
            .await
            .expect("records sent afterwards go on");
        assert_eq!(metadata.offset, Offset(0), "nothing was stored before");
        assert_eq!(
            numbering(&cluster),
            [(0, 1000, 0, 0, 1), (0, 1000, 1, 0, 1)],
            "{code}: the next epoch, from sequence 0"
        );
    }
}

#[tokio::test]
async fn an_idempotent_producer_needs_a_producer_id_from_the_sc() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "no-id", 1).await;
    cluster.stop_sc();
    // The connection closes shortly after the listener stops.
    let error = bounded("producer creation to fail", async {
        loop {
            match client.producer(&topic, ProducerConfig::default()).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(error) => return error,
            }
        }
    })
    .await;
    assert!(matches!(error, ClientError::NoProducerId { .. }), "{error}");
    assert!(error.is_retriable(), "the SC may come back: {error}");
    let message = error.to_string();
    assert!(
        message.contains("set ProducerConfig::idempotent to false"),
        "{message}"
    );

    let config = ProducerConfig {
        idempotent: false,
        ..ProducerConfig::default()
    };
    let producer = client
        .producer(&topic, config)
        .await
        .expect("no producer id needed");
    let delivery = send_to(&producer, 0, "plain").await;
    let metadata = bounded("delivery", delivery).await.expect("delivered");
    assert_eq!(metadata.offset, Offset(0));
}
