//! Records go in through the producer and come back through the consumer,
//! on the partitions the keys choose, in order.

use std::collections::BTreeMap;

use bytes::Bytes;
use runnel_client::{
    ConsumerConfig, ConsumerRecord, ProducerConfig, ProducerRecord, RecordHeader, StartFrom,
    key_partition,
};
use runnel_types::{Offset, PartitionId};

use crate::support::{FakeCluster, bounded};

/// Reads until the consumer ends (it must, with `stop_at_end`).
async fn read_to_end(consumer: &mut runnel_client::Consumer) -> Vec<ConsumerRecord> {
    let mut records = Vec::new();
    while let Some(record) = bounded("the next record", consumer.next()).await {
        records.push(record.expect("a record"));
    }
    records
}

#[tokio::test]
async fn keyed_records_come_back_in_order_on_their_key_partitions() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "orders", 2).await;
    let config = ProducerConfig {
        // The smallest batches, and values of about 100 bytes: several
        // batches per partition.
        batch_size: 1 << 10,
        ..ProducerConfig::default()
    };
    let producer = client.producer(&topic, config).await.expect("producer");
    let mut deliveries = Vec::new();
    for index in 0..60 {
        let key = format!("key-{}", index % 7);
        let value = format!("value-{index}-{}", "x".repeat(100));
        let delivery = producer
            .send(Some(Bytes::from(key.clone())), Bytes::from(value.clone()))
            .await
            .expect("send");
        deliveries.push((key, value, delivery));
    }
    bounded("flush", producer.flush()).await.expect("flush");

    // What each partition must hold, in order.
    let mut expected: BTreeMap<PartitionId, Vec<(String, String)>> = BTreeMap::new();
    for (key, value, delivery) in deliveries {
        let metadata = bounded("a delivery", delivery).await.expect("acknowledged");
        let partition = key_partition(key.as_bytes(), 2);
        assert_eq!(
            metadata.partition, partition,
            "{key} lands on its hash partition"
        );
        let records = expected.entry(partition).or_default();
        assert_eq!(
            metadata.offset,
            Offset(records.len() as i64),
            "offsets follow the send order within a partition"
        );
        records.push((key, value));
    }
    assert_eq!(expected.len(), 2, "seven keys spread over both partitions");

    let consumer_config = ConsumerConfig {
        start: StartFrom::Beginning,
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut consumer = bounded("consumer", client.consumer(&topic, consumer_config.clone()))
        .await
        .expect("consumer");
    let records = read_to_end(&mut consumer).await;
    let mut received: BTreeMap<PartitionId, Vec<(String, String)>> = BTreeMap::new();
    for record in records {
        let entries = received.entry(record.partition).or_default();
        assert_eq!(
            record.offset,
            Offset(entries.len() as i64),
            "no gap, no repeat"
        );
        let key = record.key.expect("keyed record");
        entries.push((
            String::from_utf8(key.to_vec()).expect("utf-8 key"),
            String::from_utf8(record.value.to_vec()).expect("utf-8 value"),
        ));
    }
    assert_eq!(received, expected);

    // In batches: the same records, each batch of one partition in order,
    // one record taken with `next` first.
    let mut consumer = bounded("consumer", client.consumer(&topic, consumer_config))
        .await
        .expect("consumer");
    let first = bounded("the first record", consumer.next())
        .await
        .expect("a record")
        .expect("no error");
    let mut batched: BTreeMap<PartitionId, Vec<i64>> = BTreeMap::new();
    batched
        .entry(first.partition)
        .or_default()
        .push(first.offset.0);
    while let Some(batch) = bounded("the next batch", consumer.next_batch()).await {
        let batch = batch.expect("no error");
        assert!(!batch.is_empty(), "a batch holds a record at least");
        let partition = batch[0].partition;
        assert!(batch.iter().all(|record| record.partition == partition));
        batched
            .entry(partition)
            .or_default()
            .extend(batch.iter().map(|record| record.offset.0));
    }
    let offsets: BTreeMap<PartitionId, Vec<i64>> = expected
        .iter()
        .map(|(partition, records)| (*partition, (0..records.len() as i64).collect()))
        .collect();
    assert_eq!(batched, offsets);
}

#[tokio::test]
async fn a_consumer_at_the_end_is_pushed_a_record_produced_later() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "events", 2).await;
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    let early = producer
        .send_to(PartitionId(1), None, Bytes::from_static(b"before"))
        .await
        .expect("send");
    bounded("early delivery", early)
        .await
        .expect("acknowledged");

    let mut consumer = bounded(
        "consumer",
        client.consumer(&topic, ConsumerConfig::default()),
    )
    .await
    .expect("consumer at the end");
    let header = RecordHeader {
        key: b"trace".to_vec(),
        value: Some(b"abc".to_vec()),
    };
    let late = producer
        .send_record(ProducerRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"after"),
            headers: vec![header.clone()],
            timestamp: Some(1_700_000_000_123),
            partition: Some(PartitionId(1)),
        })
        .await
        .expect("send");
    let metadata = bounded("late delivery", late).await.expect("acknowledged");
    assert_eq!(metadata.offset, Offset(1));

    let record = bounded("the pushed record", consumer.next())
        .await
        .expect("the consumer goes on")
        .expect("a record");
    assert_eq!(
        record,
        ConsumerRecord {
            partition: PartitionId(1),
            offset: Offset(1),
            timestamp: 1_700_000_000_123,
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"after"),
            headers: vec![header],
        }
    );
}

#[tokio::test]
async fn stop_at_end_delivers_what_existed_at_the_start_then_ends() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "finite", 2).await;
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    for value in ["a", "b", "c"] {
        producer
            .send_to(PartitionId(0), None, Bytes::from(value))
            .await
            .expect("send");
    }
    bounded("flush", producer.flush()).await.expect("flush");

    let config = ConsumerConfig {
        start: StartFrom::Beginning,
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut consumer = bounded("consumer", client.consumer(&topic, config.clone()))
        .await
        .expect("consumer");
    // Produced after the start: not part of what the consumer reads.
    producer
        .send_to(PartitionId(0), None, Bytes::from_static(b"later"))
        .await
        .expect("send");
    bounded("flush", producer.flush()).await.expect("flush");
    let values: Vec<Bytes> = read_to_end(&mut consumer)
        .await
        .into_iter()
        .map(|record| record.value)
        .collect();
    assert_eq!(values, ["a", "b", "c"]);

    // From the end, with nothing new: ends at once.
    let mut at_end = bounded(
        "consumer",
        client.consumer(
            &topic,
            ConsumerConfig {
                start: StartFrom::End,
                ..config.clone()
            },
        ),
    )
    .await
    .expect("consumer");
    assert!(read_to_end(&mut at_end).await.is_empty());

    // The last two records of partition 0 only.
    let mut tail = bounded(
        "consumer",
        client.consumer(
            &topic,
            ConsumerConfig {
                partitions: Some(vec![PartitionId(0)]),
                start: StartFrom::FromEnd(2),
                ..config
            },
        ),
    )
    .await
    .expect("consumer");
    let offsets: Vec<Offset> = read_to_end(&mut tail)
        .await
        .into_iter()
        .map(|record| record.offset)
        .collect();
    assert_eq!(offsets, [Offset(2), Offset(3)]);
}

#[tokio::test]
async fn keyless_records_go_round_robin() {
    let cluster = FakeCluster::start().await;
    let client = cluster.client().await;
    let topic = cluster.create_topic(&client, "spread", 2).await;
    let producer = client
        .producer(&topic, ProducerConfig::default())
        .await
        .expect("producer");
    let mut partitions = Vec::new();
    for index in 0..4 {
        let delivery = producer
            .send(None, Bytes::from(format!("{index}")))
            .await
            .expect("send");
        partitions.push(
            bounded("delivery", delivery)
                .await
                .expect("acknowledged")
                .partition,
        );
    }
    assert_eq!(
        partitions,
        [
            PartitionId(0),
            PartitionId(1),
            PartitionId(0),
            PartitionId(1)
        ]
    );
}
