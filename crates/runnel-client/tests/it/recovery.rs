//! Failures the client rides out: a leader that refuses, a partition not
//! ready yet, an SPU marked offline, an SC that goes away and comes back;
//! and the ends it does not: a removed replica, a deleted topic.

use std::time::Duration;

use bytes::Bytes;
use runnel_api::ErrorCode;
use runnel_client::{ClientError, ConsumerConfig, ProducerConfig, StartFrom};
use runnel_metadata::{PartitionKey, TopicConfig, TopicSpec};
use runnel_types::{Offset, PartitionId};

use crate::support::{FakeCluster, WAIT, bounded, topic_name};

#[tokio::test]
async fn a_refused_batch_is_retried_and_delivered_once() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "retried", 2).await;
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    cluster.spu.refuse_next_produces(1);
    let delivery = producer
        .send_to(PartitionId(0), None, Bytes::from_static(b"persistent"))
        .await
        .expect("send");
    let metadata = bounded("delivery", delivery)
        .await
        .expect("delivered after a retry");
    assert_eq!(metadata.offset, Offset(0));
    assert_eq!(
        cluster.spu.produce_requests(),
        2,
        "refused once, then accepted"
    );

    let config = ConsumerConfig {
        start: StartFrom::Beginning,
        stop_at_end: true,
        partitions: Some(vec![PartitionId(0)]),
        ..ConsumerConfig::default()
    };
    let mut consumer = bounded("consumer", client.consumer(&topic, config))
        .await
        .expect("consumer");
    let record = bounded("record", consumer.next())
        .await
        .expect("one record")
        .expect("valid");
    assert_eq!(record.value, Bytes::from_static(b"persistent"));
    assert!(
        bounded("end", consumer.next()).await.is_none(),
        "stored once"
    );
}

#[tokio::test]
async fn retries_stop_at_the_limit_with_the_last_error() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "stubborn", 1).await;
    let config = ProducerConfig {
        max_retries: 2,
        retry_backoff: Duration::from_millis(1),
        ..ProducerConfig::default()
    };
    let producer = client.producer(&topic, config).await.expect("producer");
    cluster.spu.refuse_next_produces(u32::MAX);
    let delivery = producer
        .send(None, Bytes::from_static(b"x"))
        .await
        .expect("send");
    let error = bounded("delivery", delivery)
        .await
        .expect_err("never accepted");
    let message = error.to_string();
    assert!(message.contains("after 3 attempts"), "{message}");
    assert!(message.contains("not the leader"), "{message}");
    assert_eq!(cluster.spu.produce_requests(), 3);
}

#[tokio::test]
async fn records_wait_for_an_offline_leader_to_return() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "patient", 1).await;
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    cluster.sc.set_spu_online(false);
    bounded(
        "the SPU offline in the metadata",
        client.wait_for_metadata(|view| view.spus.values().all(|spu| !spu.online), WAIT),
    )
    .await
    .expect("offline");
    let delivery = producer
        .send(None, Bytes::from_static(b"waiting"))
        .await
        .expect("send");
    let error = client
        .list_offset(&topic, PartitionId(0), runnel_client::OffsetQuery::End)
        .await
        .expect_err("no leader while the SPU is offline");
    assert!(matches!(error, ClientError::NoLeader(_)), "{error}");
    assert!(error.is_retriable());
    cluster.sc.set_spu_online(true);
    let metadata = bounded("delivery", delivery)
        .await
        .expect("delivered once back");
    assert_eq!(metadata.offset, Offset(0));
    assert_eq!(
        cluster.spu.produce_requests(),
        1,
        "nothing was sent to an offline leader"
    );
}

#[tokio::test]
async fn the_client_reconnects_to_a_restarted_sc() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let admin = client.admin();
    assert!(
        bounded("list", admin.list_topics(Vec::new()))
            .await
            .expect("list")
            .is_empty()
    );

    cluster.stop_sc();
    // The connection closes shortly after the listener stops.
    let error = bounded("a failing admin call", async {
        loop {
            match admin.list_topics(Vec::new()).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(error) => return error,
            }
        }
    })
    .await;
    assert!(error.is_retriable(), "{error}");
    assert!(
        matches!(error, ClientError::ScUnavailable { .. }),
        "{error}"
    );

    cluster.restart_sc().await;
    let spec = TopicSpec {
        name: topic_name("after-restart"),
        partitions: 3,
        replication_factor: 1,
        config: TopicConfig::default(),
    };
    bounded("an admin call succeeding again", async {
        loop {
            match admin.create_topic(spec.clone()).await {
                Ok(()) => return,
                Err(error) if error.is_retriable() => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(error) => panic!("not retriable: {error}"),
            }
        }
    })
    .await;
    // The metadata watch resumed: the new topic shows up by itself.
    let view = bounded(
        "the new topic in the metadata",
        client.wait_for_metadata(|view| view.topics.contains_key(&spec.name), WAIT),
    )
    .await
    .expect("watch resumed");
    assert_eq!(view.partitions_of(&spec.name).count(), 3);
}

#[tokio::test]
async fn a_consumer_resumes_after_its_leader_restarts() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "resumed", 1).await;
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    let config = ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    };
    let mut consumer = bounded("consumer", client.consumer(&topic, config))
        .await
        .expect("consumer");
    for value in ["one", "two"] {
        producer.send(None, Bytes::from(value)).await.expect("send");
    }
    bounded("flush", producer.flush()).await.expect("flush");
    for expected in [0, 1] {
        let record = bounded("record", consumer.next())
            .await
            .expect("record")
            .expect("valid");
        assert_eq!(record.offset, Offset(expected));
    }

    cluster.restart_spu().await;
    // Once the consumer has opened its new stream, the client has seen
    // the old connection close: the produce below cannot go out on it
    // (which would leave its outcome unknown).
    bounded(
        "the consumer's stream on the new connection",
        cluster
            .spu
            .fetch_streams
            .subscribe()
            .wait_for(|opened| *opened >= 2),
    )
    .await
    .expect("the SPU lives");
    let delivery = producer
        .send(None, Bytes::from_static(b"three"))
        .await
        .expect("send");
    bounded("delivery", delivery)
        .await
        .expect("delivered on a new connection");
    let record = bounded("the record after the restart", consumer.next())
        .await
        .expect("record")
        .expect("valid");
    assert_eq!(
        (record.offset, record.value),
        (Offset(2), Bytes::from_static(b"three")),
        "resumed at the next offset: nothing repeated, nothing lost"
    );
}

#[tokio::test]
async fn dropping_the_last_clone_stops_the_metadata_watch() {
    let cluster = FakeCluster::start().await;
    let mut watchers = cluster.sc.watchers.subscribe();
    let client = cluster.client().await;
    let clone = client.clone();
    bounded("the watch", watchers.wait_for(|count| *count == 1))
        .await
        .expect("watching");
    drop(client);
    assert_eq!(
        clone.metadata().spus.len(),
        1,
        "a clone keeps the client alive"
    );
    drop(clone);
    bounded("the watch to end", watchers.wait_for(|count| *count == 0))
        .await
        .expect("watch ended");
}

#[tokio::test]
async fn a_partition_not_ready_yet_is_waited_for() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "pending", 1).await;
    let key = PartitionKey {
        topic: topic.clone(),
        partition: PartitionId(0),
    };
    cluster.spu.set_hosted(&key, false);
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    let delivery = producer
        .send(None, Bytes::from_static(b"early"))
        .await
        .expect("send");
    let config = ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    };
    let consumer = tokio::spawn({
        let client = client.clone();
        let topic = topic.clone();
        async move { client.consumer(&topic, config).await }
    });
    cluster.spu.wait_for_produce_requests(2).await;
    cluster.spu.set_hosted(&key, true);
    let metadata = bounded("delivery", delivery)
        .await
        .expect("delivered once hosted");
    assert_eq!(metadata.offset, Offset(0));
    let mut consumer = bounded("the consumer start", consumer)
        .await
        .expect("the start task")
        .expect("started once hosted");
    let record = bounded("record", consumer.next())
        .await
        .expect("a record")
        .expect("valid");
    assert_eq!(record.value, Bytes::from_static(b"early"));
}

#[tokio::test]
async fn a_stream_ended_by_a_removed_replica_is_not_retried() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "evicted", 1).await;
    let key = PartitionKey {
        topic: topic.clone(),
        partition: PartitionId(0),
    };
    let mut consumer = bounded(
        "consumer",
        client.consumer(&topic, ConsumerConfig::default()),
    )
    .await
    .expect("consumer");
    bounded(
        "the fetch stream",
        cluster
            .spu
            .fetch_streams
            .subscribe()
            .wait_for(|opened| *opened >= 1),
    )
    .await
    .expect("the SPU lives");
    // The SPU drops the replica while the metadata still names it: the
    // stream's end is final, and later requests would only be answered
    // "not ready".
    cluster.spu.remove_replica(&key);
    let error = bounded("the stream's end", consumer.next())
        .await
        .expect("an error, not the end")
        .expect_err("removed");
    assert!(
        matches!(&error, ClientError::Api(error) if error.code == ErrorCode::PARTITION_NOT_FOUND),
        "{error}"
    );
    assert!(bounded("end", consumer.next()).await.is_none());
}

#[tokio::test]
async fn a_deleted_topic_ends_its_consumers() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "vanishing", 1).await;
    let key = PartitionKey {
        topic: topic.clone(),
        partition: PartitionId(0),
    };
    let mut consumer = bounded(
        "consumer",
        client.consumer(&topic, ConsumerConfig::default()),
    )
    .await
    .expect("consumer");
    bounded("delete", client.admin().delete_topic(&topic))
        .await
        .expect("deleted");
    bounded(
        "the deletion in the metadata",
        client.wait_for_metadata(|view| !view.topics.contains_key(&topic), WAIT),
    )
    .await
    .expect("gone");
    cluster.spu.remove_replica(&key);
    let error = bounded("the stream's end", consumer.next())
        .await
        .expect("an error, not the end")
        .expect_err("deleted");
    assert!(
        matches!(&error, ClientError::TopicDeleted(name) if *name == topic),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "topic 'vanishing' was deleted while it was being read"
    );
}
