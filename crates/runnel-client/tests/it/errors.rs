//! Errors the user must act on, and what their messages say.

use std::time::Duration;

use bytes::Bytes;
use runnel_client::{
    ClientError, ConsumerConfig, MAX_BATCH_BYTES, ProducerConfig, RunnelClient, StartFrom,
};
use runnel_metadata::PartitionKey;
use runnel_types::{Offset, PartitionId};

use crate::support::{FakeCluster, SPU, WAIT, bounded, topic_name, unused_address};

#[tokio::test]
async fn an_unreachable_cluster_says_how_to_start_one() {
    let addr = unused_address().await;
    let error = bounded("connect", RunnelClient::connect(&addr))
        .await
        .expect_err("nothing listens there");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot reach the cluster at {addr}; is it running? start a local one with `runnel cluster start`"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn an_unknown_topic_says_how_to_create_it() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let missing = topic_name("missing");
    let producer_error = client
        .producer(&missing, ProducerConfig::default())
        .await
        .expect_err("no such topic");
    let consumer_error = client
        .consumer(&missing, ConsumerConfig::default())
        .await
        .expect_err("no such topic");
    for error in [producer_error, consumer_error] {
        assert_eq!(
            error.to_string(),
            "topic 'missing' does not exist; create it with `runnel topic create missing`"
        );
    }
}

#[tokio::test]
async fn a_partition_out_of_range_names_the_partition_count() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "pair", 2).await;
    let config = ConsumerConfig {
        partitions: Some(vec![PartitionId(2)]),
        ..ConsumerConfig::default()
    };
    let error = client
        .consumer(&topic, config)
        .await
        .expect_err("partition 2 of 2");
    assert!(matches!(
        error,
        ClientError::PartitionOutOfRange { count: 2, .. }
    ));
    assert!(error.to_string().contains("has 2 partitions"), "{error}");

    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    let error = producer
        .send_to(PartitionId(5), None, Bytes::from_static(b"x"))
        .await
        .expect_err("partition 5 of 2");
    assert!(error.to_string().contains("has 2 partitions"), "{error}");
}

#[tokio::test]
async fn a_corrupt_batch_is_an_error_and_never_delivered() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "damaged", 1).await;
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    // Two batches: the first intact, the second corrupted on the server.
    for value in ["good", "bad"] {
        let delivery = producer.send(None, Bytes::from(value)).await.expect("send");
        bounded("delivery", delivery).await.expect("acknowledged");
    }
    let key = PartitionKey {
        topic: topic.clone(),
        partition: PartitionId(0),
    };
    cluster.spu.corrupt(&key, 1);

    let config = ConsumerConfig {
        start: StartFrom::Beginning,
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut consumer = bounded("consumer", client.consumer(&topic, config))
        .await
        .expect("consumer");
    let first = bounded("first record", consumer.next())
        .await
        .expect("a record")
        .expect("intact");
    assert_eq!(first.value, Bytes::from_static(b"good"));
    let error = bounded("the corrupt batch", consumer.next())
        .await
        .expect("an error, not the end")
        .expect_err("corrupt");
    assert!(
        matches!(
            &error,
            ClientError::CorruptBatch { partition, offset: Offset(1), .. } if *partition == key
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("damaged-0 at offset 1"), "{message}");
    assert!(
        message.contains("run `runnel debug verify-log` on the replica directory of damaged-0 on its leader, SPU 1"),
        "{message}"
    );
    assert!(bounded("end", consumer.next()).await.is_none());
}

#[tokio::test]
async fn an_offset_outside_the_partition_names_its_range() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "short", 1).await;
    // Past the high watermark, the start is asked again (a new leader may
    // not know the committed end yet) until the start timeout.
    let config = ConsumerConfig {
        start: StartFrom::Offset(10),
        start_timeout: std::time::Duration::from_millis(500),
        ..ConsumerConfig::default()
    };
    let error = bounded("consumer", client.consumer(&topic, config))
        .await
        .expect_err("out of range");
    assert!(
        matches!(
            error,
            ClientError::OffsetOutOfRange {
                requested: Offset(10),
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_deleted_topic_fails_its_pending_records() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "doomed", 1).await;
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    bounded("delete", client.admin().delete_topic(&topic))
        .await
        .expect("deleted");
    bounded(
        "the deletion in the metadata",
        client.wait_for_metadata(
            |view| !view.topics.contains_key(&topic),
            crate::support::WAIT,
        ),
    )
    .await
    .expect("gone");
    let delivery = producer
        .send(None, Bytes::from_static(b"orphan"))
        .await
        .expect("send");
    let error = bounded("delivery", delivery).await.expect_err("topic gone");
    assert!(
        matches!(error, runnel_client::ProduceError::TopicDeleted(ref name) if *name == topic),
        "{error}"
    );
}

/// Produces three batches of one record each on partition 0 of a new
/// topic; returns the client and that partition.
async fn three_batches(cluster: &FakeCluster, name: &str) -> (RunnelClient, PartitionKey) {
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, name, 1).await;
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    for value in ["zero", "one", "two"] {
        let delivery = producer.send(None, Bytes::from(value)).await.expect("send");
        bounded("delivery", delivery).await.expect("acknowledged");
    }
    let key = PartitionKey {
        topic,
        partition: PartitionId(0),
    };
    (client, key)
}

/// Reads `key` from the beginning to the end: the values delivered before
/// the first error, and that error.
async fn read_until_error(client: &RunnelClient, key: &PartitionKey) -> (Vec<Bytes>, ClientError) {
    let config = ConsumerConfig {
        start: StartFrom::Beginning,
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut consumer = bounded("consumer", client.consumer(&key.topic, config))
        .await
        .expect("consumer");
    let mut values = Vec::new();
    loop {
        match bounded("the next record", consumer.next()).await {
            Some(Ok(record)) => values.push(record.value),
            Some(Err(error)) => {
                assert!(
                    bounded("end", consumer.next()).await.is_none(),
                    "the partition stops at the error"
                );
                return (values, error);
            }
            None => panic!("ended without an error after {values:?}"),
        }
    }
}

#[tokio::test]
async fn a_first_batch_that_skips_ahead_of_the_wanted_offset_is_an_error() {
    let cluster = FakeCluster::start().await;
    let (client, key) = three_batches(&cluster, "skipping").await;
    // The batch of offset 0 now claims to start at 5; its CRC still holds.
    cluster.spu.rewrite_base_offset(&key, 0, 5);
    let (values, error) = read_until_error(&client, &key).await;
    assert!(values.is_empty(), "nothing delivered: {values:?}");
    assert!(
        matches!(
            &error,
            ClientError::CorruptBatch { partition, offset: Offset(0), .. } if *partition == key
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("skipping-0 at offset 0"), "{message}");
    assert!(message.contains("starts at offset 5"), "{message}");
    assert!(message.contains("runnel debug verify-log"), "{message}");
}

#[tokio::test]
async fn a_gap_between_batches_is_an_error_after_the_batches_before_it() {
    let cluster = FakeCluster::start().await;
    let (client, key) = three_batches(&cluster, "gapped").await;
    // The batch of offset 2 now claims to start at 4: offsets 2 and 3 are
    // missing between it and the batch before.
    cluster.spu.rewrite_base_offset(&key, 2, 4);
    let (values, error) = read_until_error(&client, &key).await;
    assert_eq!(values, ["zero", "one"], "the batches before the gap");
    assert!(
        matches!(
            &error,
            ClientError::CorruptBatch {
                offset: Offset(2),
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("(a gap)"), "{message}");
    assert!(message.contains("gapped-0 at offset 2"), "{message}");
}

#[tokio::test]
async fn producer_settings_out_of_range_are_refused_naming_the_range() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "configured", 1).await;
    let cases = [
        (
            ProducerConfig {
                batch_size: 100,
                ..ProducerConfig::default()
            },
            "invalid ProducerConfig::batch_size 100 bytes: it must be between 1KiB and 8MiB",
        ),
        (
            ProducerConfig {
                batch_size: MAX_BATCH_BYTES + 1,
                ..ProducerConfig::default()
            },
            "invalid ProducerConfig::batch_size",
        ),
        (
            ProducerConfig {
                max_buffered_bytes: 8 << 10,
                ..ProducerConfig::default()
            },
            "invalid ProducerConfig::max_buffered_bytes 8192 bytes: it must be at least the batch size, 16384 bytes",
        ),
        (
            ProducerConfig {
                linger: Duration::from_secs(61),
                ..ProducerConfig::default()
            },
            "invalid ProducerConfig::linger 61s: it must be at most 60s",
        ),
        (
            ProducerConfig {
                delivery_timeout: Duration::ZERO,
                ..ProducerConfig::default()
            },
            "invalid ProducerConfig::delivery_timeout 0ns: it must be more than zero",
        ),
    ];
    for (config, expected) in cases {
        let error = client
            .producer(&topic, config)
            .await
            .expect_err("out of range");
        assert!(
            matches!(error, ClientError::InvalidConfig { .. }),
            "{error}"
        );
        assert!(error.to_string().starts_with(expected), "{error}");
    }
}

#[tokio::test]
async fn a_record_larger_than_a_batch_is_refused_at_send() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "bulky", 1).await;
    let config = ProducerConfig {
        max_buffered_bytes: 64 << 20,
        ..ProducerConfig::default()
    };
    let producer = client.producer(&topic, config).await.expect("producer");
    let error = producer
        .send(None, Bytes::from(vec![0; MAX_BATCH_BYTES]))
        .await
        .expect_err("larger than any batch");
    assert!(
        matches!(error, ClientError::RecordTooLarge { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("bytes exceeds the 8MiB batch limit"),
        "{error}"
    );
    assert_eq!(cluster.spu.produce_requests(), 0, "nothing was sent");

    let small_buffer = client
        .producer(
            &topic,
            ProducerConfig {
                max_buffered_bytes: 16 << 10,
                ..ProducerConfig::default()
            },
        )
        .await
        .expect("producer");
    let error = small_buffer
        .send(None, Bytes::from(vec![0; 20 << 10]))
        .await
        .expect_err("larger than the buffer");
    assert!(
        error
            .to_string()
            .contains("exceeds the producer's buffer of 16384 bytes"),
        "{error}"
    );
}

#[tokio::test]
async fn a_consumer_start_gives_up_on_an_offline_leader_and_names_it() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "stranded", 1).await;
    cluster.sc.set_spu_online(false);
    bounded(
        "the SPU offline in the metadata",
        client.wait_for_metadata(|view| view.spus.values().all(|spu| !spu.online), WAIT),
    )
    .await
    .expect("offline");
    for stop_at_end in [false, true] {
        let config = ConsumerConfig {
            start: StartFrom::Beginning,
            stop_at_end,
            start_timeout: Duration::from_millis(200),
            ..ConsumerConfig::default()
        };
        let error = bounded("the consumer start", client.consumer(&topic, config))
            .await
            .expect_err("no leader to start from");
        assert!(
            matches!(
                error,
                ClientError::NoReachableLeader {
                    leader: Some(SPU),
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "partition stranded-0 has no online leader (SPU 1 is offline); start it with `runnel cluster start`"
        );
    }
}
