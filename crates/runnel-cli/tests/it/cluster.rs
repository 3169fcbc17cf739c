//! A local cluster of real processes, end to end through the CLI.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Background, TestCluster};

/// Bounds a wait for something that happens at once unless the code is
/// broken; never a measurement.
const PATIENCE: Duration = Duration::from_secs(30);

fn partitions(cluster: &TestCluster, topic: &str) -> Vec<Value> {
    cluster.json_lines(&["partition", "list", "--topic", topic, "-O", "json"], b"")
}

#[test]
fn keyed_records_spread_over_three_spus_and_come_back_complete() {
    let cluster = TestCluster::start(3);
    cluster.ok(&["topic", "create", "events", "-p", "6"]);

    let partitions = partitions(&cluster, "events");
    assert_eq!(partitions.len(), 6);
    let mut leaders: BTreeMap<u64, usize> = BTreeMap::new();
    for partition in &partitions {
        *leaders
            .entry(partition["leader"].as_u64().expect("a leader"))
            .or_default() += 1;
    }
    assert_eq!(
        leaders,
        BTreeMap::from([(1, 2), (2, 2), (3, 2)]),
        "two leaders per SPU"
    );

    const RECORDS: usize = 100_000;
    let input: String = (0..RECORDS)
        .map(|i| format!("key-{}=value-{i}\n", i % 1000))
        .collect();
    let acks = cluster.json_lines(
        &["produce", "events", "--key-separator", "=", "-O", "json"],
        input.as_bytes(),
    );
    assert_eq!(acks.len(), RECORDS, "one acknowledgement per record");

    let records = cluster.json_lines(&["consume", "events", "-B", "-d", "-O", "json"], b"");
    assert_eq!(records.len(), RECORDS, "every record consumed");

    let mut last_offset: HashMap<u64, i64> = HashMap::new();
    let mut partition_of_key: HashMap<String, u64> = HashMap::new();
    let mut values = HashSet::new();
    for record in &records {
        let partition = record["partition"].as_u64().unwrap();
        let offset = record["offset"].as_i64().unwrap();
        if let Some(previous) = last_offset.insert(partition, offset) {
            assert!(offset > previous, "partition {partition} in offset order");
        }
        let key = record["key"].as_str().unwrap().to_string();
        let first = *partition_of_key.entry(key.clone()).or_insert(partition);
        assert_eq!(first, partition, "key {key} always on one partition");
        values.insert(record["value"].as_str().unwrap().to_string());
    }
    assert_eq!(values.len(), RECORDS, "no record lost or duplicated");
    // The acknowledged positions are exactly where the records are.
    let consumed: HashSet<(u64, i64)> = records
        .iter()
        .map(|r| {
            (
                r["partition"].as_u64().unwrap(),
                r["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    for ack in &acks {
        let position = (
            ack["partition"].as_u64().unwrap(),
            ack["offset"].as_i64().unwrap(),
        );
        assert!(
            consumed.contains(&position),
            "acknowledged {position:?} is there"
        );
    }
}

#[test]
fn a_streaming_consumer_is_pushed_each_record_while_the_producer_waits() {
    let cluster = TestCluster::start(1);
    cluster.ok(&["topic", "create", "pings"]);
    let consumer = Background::spawn(
        cluster.command(&["consume", "pings", "-p", "0", "-o", "0", "-O", "json"]),
    );
    // Ping-pong: each record is produced only after the previous one was
    // delivered, so a consumer that waited for a poll interval (or for
    // more data) would stall here instead of answering every time.
    for round in 0..20 {
        cluster.run(&["produce", "pings"], format!("ping-{round}\n").as_bytes());
        let line = consumer
            .next_line(PATIENCE)
            .unwrap_or_else(|| panic!("ping {round} was not pushed to the consumer"));
        let record: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(record["value"], format!("ping-{round}"));
        assert_eq!(record["offset"], round);
    }
}

#[test]
fn records_survive_cluster_stop_start_and_an_spu_killed_with_sigkill() {
    let cluster = TestCluster::start(2);
    cluster.ok(&["topic", "create", "durable", "-p", "4"]);
    let input: String = (0..1000).map(|i| format!("k{i}=v{i}\n")).collect();
    let acks = cluster.json_lines(
        &["produce", "durable", "--key-separator", "=", "-O", "json"],
        input.as_bytes(),
    );
    assert_eq!(acks.len(), 1000);

    cluster.ok(&["cluster", "stop"]);
    assert!(cluster.pid("sc").is_none(), "stop removes the pid files");
    cluster.cluster_start();
    let records = cluster.json_lines(&["consume", "durable", "-B", "-d", "-O", "json"], b"");
    assert_eq!(records.len(), 1000, "every record after stop and start");

    // More acknowledged records, then SPU 1 dies without a chance to close.
    let more: String = (1000..2000).map(|i| format!("k{i}=v{i}\n")).collect();
    let acks = cluster.json_lines(
        &["produce", "durable", "--key-separator", "=", "-O", "json"],
        more.as_bytes(),
    );
    assert_eq!(acks.len(), 1000);
    cluster.kill("spu-1");
    let status = cluster.json_lines(&["cluster", "status", "-O", "json"], b"");
    let spu_1 = status[0]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|process| process["process"] == "spu-1")
        .unwrap()
        .clone();
    assert_eq!(spu_1["running"], false, "status sees the dead SPU");

    let started = cluster.cluster_start();
    assert!(
        started.contains("started spu-1"),
        "only the missing SPU starts: {started}"
    );
    assert!(
        !started.contains("started sc"),
        "the SC kept running: {started}"
    );
    let records = cluster.json_lines(&["consume", "durable", "-B", "-d", "-O", "json"], b"");
    let values: HashSet<String> = records
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        values.len(),
        2000,
        "every acknowledged record after kill -9"
    );
}

#[test]
fn clients_keep_working_after_the_sc_restarts() {
    let cluster = TestCluster::start(1);
    cluster.ok(&["topic", "create", "steady"]);
    let consumer = Background::spawn(
        cluster.command(&["consume", "steady", "-p", "0", "-o", "0", "-O", "json"]),
    );
    cluster.run(&["produce", "steady"], b"before\n");
    let line = consumer.next_line(PATIENCE).expect("first record");
    assert!(line.contains("before"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime
        .block_on(runnel_client::RunnelClient::connect(&cluster.sc_addr()))
        .unwrap();

    cluster.kill("sc");
    cluster.cluster_start();

    // The connected client finds the SC again by itself.
    let topics = runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match client.admin().list_topics(Vec::new()).await {
                Ok(topics) => break topics,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    assert!(error.is_retriable(), "{error} should be retriable");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("the client did not recover: {error}"),
            }
        }
    });
    assert_eq!(topics.len(), 1, "metadata survived the SC restart");

    // The consumer that stayed connected still gets new records.
    cluster.run(&["produce", "steady"], b"after\n");
    let line = consumer.next_line(PATIENCE).expect("record after restart");
    assert!(line.contains("after"));
}

#[test]
fn bad_input_gets_clear_errors_and_the_servers_keep_running() {
    let cluster = TestCluster::start(1);
    cluster.ok(&["topic", "create", "good", "-p", "2"]);

    let error = cluster.fails(&["topic", "create", "bad name!"], b"");
    assert!(error.contains("only ASCII letters"), "{error}");

    let error = cluster.fails(&["consume", "missing", "-d"], b"");
    assert!(error.contains("runnel topic create"), "{error}");
    let error = cluster.fails(&["produce", "missing"], b"x\n");
    assert!(error.contains("runnel topic create"), "{error}");

    let error = cluster.fails(&["produce", "good", "--partition", "7"], b"x\n");
    assert!(error.contains("2 partitions"), "{error}");
    let error = cluster.fails(&["consume", "good", "-p", "7", "-d"], b"");
    assert!(error.contains("2 partitions"), "{error}");

    let error = cluster.fails(&["topic", "create", "good"], b"");
    assert!(error.contains("already exists"), "{error}");
    let error = cluster.fails(&["topic", "create", "wide", "-r", "17"], b"");
    assert!(error.contains("replication factor 17"), "{error}");

    // Garbage and an oversized length prefix on every public port: the
    // server closes that connection and keeps serving.
    let spu_port = cluster.base_port + 2;
    for port in [cluster.base_port, spu_port] {
        for junk in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &[0x7F, 0xFF, 0xFF, 0xFF, 0, 0],
        ] {
            let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
            socket.set_read_timeout(Some(PATIENCE)).unwrap();
            socket.write_all(junk).unwrap();
            let mut buffer = [0; 64];
            let read = socket.read(&mut buffer).unwrap_or(0);
            assert_eq!(read, 0, "the server closes the connection on port {port}");
        }
    }
    let input = "still works\n";
    cluster.run(&["produce", "good", "--partition", "1"], input.as_bytes());
    let records = cluster.json_lines(
        &["consume", "good", "-p", "1", "-B", "-d", "-O", "json"],
        b"",
    );
    assert_eq!(records.len(), 1);

    // An oversized record is refused by the client before it is sent.
    let huge = vec![b'x'; 70 << 20];
    let error = cluster.fails(&["produce", "good"], &huge);
    assert!(
        error.contains("too large") || error.contains("exceeds"),
        "{error}"
    );

    cluster.ok(&["cluster", "stop"]);
    let error = cluster.fails(&["topic", "list"], b"");
    assert!(error.contains("runnel cluster start"), "{error}");
}

/// Waits (bounded) until `condition` holds, checking the file system.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn deleting_a_topic_removes_its_data_on_every_spu_even_one_that_was_down() {
    let cluster = TestCluster::start(2);
    cluster.ok(&["topic", "create", "doomed", "-p", "2"]);
    cluster.ok(&["topic", "create", "kept", "-p", "2"]);
    let input: String = (0..100).map(|i| format!("k{i}=v{i}\n")).collect();
    for topic in ["doomed", "kept"] {
        cluster.run(
            &["produce", topic, "--key-separator", "="],
            input.as_bytes(),
        );
    }
    let replica_dirs = |topic: &str| -> Vec<std::path::PathBuf> {
        (1..=2)
            .flat_map(|spu| (0..2).map(move |p| (spu, p)))
            .map(|(spu, p)| cluster.data_dir().join(format!("spu-{spu}/{topic}-{p}")))
            .filter(|dir| dir.exists())
            .collect()
    };
    assert_eq!(replica_dirs("doomed").len(), 2, "one replica per partition");

    // SPU 2 is down while the topic is deleted; it learns on restart.
    cluster.kill("spu-2");
    cluster.ok(&["topic", "delete", "doomed"]);
    eventually("the running SPU removes its replica", || {
        !cluster.data_dir().join("spu-1/doomed-0").exists()
            && !cluster.data_dir().join("spu-1/doomed-1").exists()
    });
    cluster.cluster_start();
    eventually("the restarted SPU removes its replica", || {
        replica_dirs("doomed").is_empty()
    });
    assert_eq!(
        replica_dirs("kept").len(),
        2,
        "other topics keep their data"
    );
    let error = cluster.fails(&["consume", "doomed", "-B", "-d"], b"");
    assert!(error.contains("does not exist"), "{error}");
    let kept = cluster.json_lines(&["consume", "kept", "-B", "-d", "-O", "json"], b"");
    assert_eq!(kept.len(), 100);
}

#[test]
fn the_benchmark_produces_and_reads_back_its_records() {
    let cluster = TestCluster::start(1);
    let report = cluster.json_lines(
        &[
            "benchmark",
            "consume",
            "--total-bytes",
            "1MiB",
            "--record-size",
            "1000B",
            "-O",
            "json",
        ],
        b"",
    );
    assert_eq!(report.len(), 1);
    assert_eq!(report[0]["records"], 1048, "1 MiB of 1000-byte records");
    assert!(report[0]["consume_mb_per_second"].as_f64().unwrap() > 0.0);
    let e2e = cluster.json_lines(
        &[
            "benchmark",
            "e2e",
            "--total-bytes",
            "200KB",
            "--record-size",
            "100B",
            "--partitions",
            "2",
            "--consumers",
            "2",
            "--producers",
            "2",
            "--keyed",
            "-O",
            "json",
        ],
        b"",
    );
    assert_eq!(e2e[0]["records"], 2000);
    assert!(
        e2e[0]["e2e_latency_ms_max"].as_f64().unwrap() > 0.0,
        "{}",
        e2e[0]
    );
    let topics = cluster.json_lines(&["topic", "list", "-O", "json"], b"");
    assert!(topics.is_empty(), "the benchmark removes its topics");
}

#[test]
fn cluster_delete_removes_only_what_the_cluster_created() {
    let user_dir = tempfile::tempdir().unwrap();
    let mine = user_dir.path().join("keep.txt");
    std::fs::write(&mine, "the user's own file").unwrap();
    let data_dir = user_dir.path().to_str().unwrap();
    let cluster = TestCluster::start_with(1, &["--data-dir", data_dir]);
    assert!(user_dir.path().join("spu-1").is_dir());

    // A later start without flags keeps the cluster's own settings.
    cluster.ok(&["cluster", "stop"]);
    cluster.cluster_start();
    let status = cluster.json_lines(&["cluster", "status", "-O", "json"], b"");
    let processes = status[0]["processes"].as_array().unwrap();
    assert_eq!(
        processes.len(),
        2,
        "still one SC and one SPU: {processes:?}"
    );

    let error = cluster.fails(&["cluster", "start", "--data-dir", "/elsewhere"], b"");
    assert!(error.contains("runnel cluster delete"), "{error}");

    cluster.ok(&["cluster", "delete"]);
    assert!(mine.exists(), "the user's file stays");
    assert!(!user_dir.path().join("spu-1").exists());
    assert!(!user_dir.path().join("sc").exists());
    assert!(cluster.pid("sc").is_none());
}
