//! Errors the user must act on, and what their messages say.

use bytes::Bytes;
use runnel_client::{ClientError, ConsumerConfig, ProducerConfig, RunnelClient, StartFrom};
use runnel_metadata::PartitionKey;
use runnel_types::{Offset, PartitionId};

use crate::support::{FakeCluster, bounded, topic_name, unused_address};

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
    assert!(
        error.to_string().contains("damaged-0 at offset 1"),
        "{error}"
    );
    assert!(bounded("end", consumer.next()).await.is_none());
}

#[tokio::test]
async fn an_offset_outside_the_partition_names_its_range() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "short", 1).await;
    let config = ConsumerConfig {
        start: StartFrom::Offset(10),
        ..ConsumerConfig::default()
    };
    let mut consumer = bounded("consumer", client.consumer(&topic, config))
        .await
        .expect("consumer");
    let error = bounded("the error", consumer.next())
        .await
        .expect("an error")
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
