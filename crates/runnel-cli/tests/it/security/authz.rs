//! Authorization: for each action on each kind of resource, with an allow
//! rule, a deny rule that overrides an allow, or no rule, the outcome on
//! the SC (administration, through the CLI) and on the SPU (produce,
//! fetch, list offsets, called directly so the SC's metadata filtering
//! cannot hide a missing check) is what the policy says.

use bytes::Bytes;
use runnel_api::{
    Acks, ErrorCode, ListOffsetsRequest, OffsetQuery, ProduceRequest, StreamFetchRequest,
};
use runnel_pki::IssuedCert;
use runnel_types::{Offset, PartitionId, TopicName};
use runnel_wire::{BatchBuilder, Compression};

use super::{PATIENCE, SecureCluster, connect, eventually, runtime};

const POLICY: &str = r#"
roles:
  - name: producer
    rules:
      - actions: [write]
        resources: ["topic:orders-*"]
      - effect: deny
        actions: [write]
        resources: ["topic:orders-internal"]
  - name: reader
    rules:
      - actions: [read]
        resources: ["topic:logs"]
  - name: all-but-logs
    rules:
      - actions: [read, write, describe]
        resources: ["topic:*"]
      - effect: deny
        actions: [admin]
        resources: ["topic:logs"]
  - name: creator
    rules:
      - actions: [create]
        resources: ["topic:new-*"]
      - actions: [describe]
        resources: [cluster]
bindings:
  - principal: alice
    role: producer
  - principal: bob
    role: reader
  - principal: erin
    role: all-but-logs
  - principal: carol
    role: creator
"#;

const TOPICS: [&str; 3] = ["orders-eu", "orders-internal", "logs"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Produce,
    Fetch,
    ListOffsets,
}

/// What the policy above means, written out by hand: the oracle.
fn allowed(principal: &str, op: Op, topic: &str) -> bool {
    let orders = topic.starts_with("orders-");
    match (principal, op) {
        ("admin", _) => true,
        ("alice", Op::Produce) => topic == "orders-eu",
        // Describe is implied by write; the deny is on write only.
        ("alice", Op::ListOffsets) => orders,
        ("bob", Op::Fetch | Op::ListOffsets) => topic == "logs",
        ("erin", _) => orders,
        _ => false,
    }
}

fn single_record_batch() -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(0, None, Some(b"authorized?".to_vec()), Vec::new());
    Bytes::from(builder.build().encode().expect("a batch"))
}

/// One SPU call as `certificate`; `Ok` if served, else the error code
/// and message.
fn spu_call(
    secure: &SecureCluster,
    certificate: &IssuedCert,
    op: Op,
    topic: &str,
) -> Result<(), (ErrorCode, String)> {
    let name = topic;
    let topic = TopicName::new(topic).expect("a topic name");
    let addr = secure.spu_public(1);
    runtime().block_on(async {
        let connection = connect(&secure.ca, certificate, &addr)
            .await
            .expect("a TLS connection to the SPU");
        let answer = match op {
            Op::Produce => {
                let request = ProduceRequest {
                    topic,
                    partition: PartitionId(0),
                    acks: Acks::Leader,
                    timeout_ms: 5000,
                };
                connection
                    .call_with_tail(&request, single_record_batch())
                    .await
                    .map(drop)
            }
            Op::ListOffsets => {
                let request = ListOffsetsRequest {
                    topic,
                    partition: PartitionId(0),
                    query: OffsetQuery::End,
                };
                connection.call(&request).await.map(drop)
            }
            Op::Fetch => {
                let request = StreamFetchRequest {
                    topic,
                    partition: PartitionId(0),
                    offset: Offset(0),
                    max_bytes: 1 << 20,
                };
                let mut stream = connection.stream(&request, 1).await.expect("a stream");
                // The one record produced by the admin first arrives, or
                // the refusal ends the stream.
                match tokio::time::timeout(PATIENCE, stream.next_with_tail()).await {
                    Ok(Some(Ok(_item))) => Ok(()),
                    Ok(Some(Err(error))) => Err(error),
                    Ok(None) => panic!("the fetch stream ended without an item or an error"),
                    Err(_) => panic!("the fetch stream neither served nor refused"),
                }
            }
        };
        answer.map_err(|error| match error {
            runnel_transport::TransportError::Api(error) => (error.code, error.message),
            other => panic!("{op:?} on {name}: expected an answer, got {other:?}"),
        })
    })
}

#[test]
fn the_policy_decides_on_the_sc_and_on_every_spu() {
    let secure = SecureCluster::start(1);
    let cluster = &secure.cluster;
    for topic in TOPICS {
        cluster.ok(&["topic", "create", topic]);
        cluster.run(&["produce", topic], b"seed\n");
    }
    let policy = cluster.home.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("write the policy");
    cluster.ok(&["apply", "-f", &policy.display().to_string()]);

    let principals = ["admin", "alice", "bob", "erin", "dave"];
    let certificates: Vec<(&str, IssuedCert)> = principals
        .iter()
        .map(|principal| (*principal, secure.issue(principal)))
        .collect();

    // The SPU gets the policy from the SC shortly after it changes.
    let alice = &certificates[1].1;
    eventually("the SPU applies the policy", || {
        spu_call(&secure, alice, Op::Produce, "orders-eu").is_ok()
    });

    for (principal, certificate) in &certificates {
        for topic in TOPICS {
            for op in [Op::Produce, Op::Fetch, Op::ListOffsets] {
                let outcome = spu_call(&secure, certificate, op, topic);
                if allowed(principal, op, topic) {
                    assert!(outcome.is_ok(), "{principal} {op:?} {topic}: {outcome:?}");
                } else {
                    let (code, message) = outcome.expect_err("refused");
                    assert_eq!(
                        code,
                        ErrorCode::PERMISSION_DENIED,
                        "{principal} {op:?} {topic}"
                    );
                    let action = match op {
                        Op::Produce => "write",
                        Op::Fetch => "read",
                        Op::ListOffsets => "describe",
                    };
                    assert_eq!(
                        message,
                        format!("permission denied: {principal} may not {action} topic:{topic}")
                    );
                }
            }
        }
    }

    // The SC's path, through the CLI.
    for (principal, certificate) in certificates
        .iter()
        .chain([&("carol", secure.issue("carol"))])
    {
        secure.add_profile(principal, &secure.listener(0), certificate);
    }
    // Listing shows what the principal may describe, and nothing else.
    let listed = |profile: &str| -> Vec<String> {
        let output = secure.ok_as(profile, &["topic", "list", "-O", "json"], b"");
        let mut names: Vec<String> = output
            .lines()
            .map(|line| {
                let topic: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                topic["name"].as_str().expect("a topic name").to_string()
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(listed("admin"), ["logs", "orders-eu", "orders-internal"]);
    assert_eq!(listed("alice"), ["orders-eu", "orders-internal"]);
    assert_eq!(listed("bob"), ["logs"]);
    assert!(listed("dave").is_empty());

    secure.ok_as("carol", &["topic", "create", "new-one"], b"");
    secure.denied_as(
        "carol",
        &["topic", "create", "other"],
        b"",
        "create topic:other",
    );
    secure.denied_as(
        "carol",
        &["topic", "delete", "new-one"],
        b"",
        "delete topic:new-one",
    );
    secure.ok_as("carol", &["spu", "list"], b"");
    secure.denied_as("alice", &["spu", "list"], b"", "describe cluster");
    for admin_only in [
        &["user", "list"][..],
        &["role", "list"],
        &["partition", "elect-preferred"],
    ] {
        secure.denied_as("erin", admin_only, b"", "admin cluster");
    }

    // Produce and consume through the client library too.
    secure.ok_as("alice", &["produce", "orders-eu"], b"from alice\n");
    secure.denied_as(
        "alice",
        &["produce", "orders-internal"],
        b"from alice\n",
        "write topic:orders-internal",
    );
    secure.denied_as(
        "alice",
        &["consume", "orders-eu", "-B", "-d"],
        b"",
        "read topic:orders-eu",
    );

    // Roles changed from the CLI reach the SPU too.
    cluster.ok(&[
        "role",
        "create",
        "late-reader",
        "--allow",
        "read=topic:orders-eu",
    ]);
    cluster.ok(&["role", "bind", "late-reader", "alice"]);
    eventually("alice may read orders-eu", || {
        spu_call(&secure, alice, Op::Fetch, "orders-eu").is_ok()
    });
    let consumed = secure.ok_as("alice", &["consume", "orders-eu", "-B", "-d"], b"");
    assert!(
        consumed.starts_with("seed\n") && consumed.ends_with("from alice\n"),
        "{consumed}"
    );

    // Denials are logged where the operator looks.
    let log = std::fs::read_to_string(cluster.home.path().join("local/logs/spu-1.log"))
        .expect("the SPU's log");
    let logged = log.lines().any(|line| {
        line.contains("WARN")
            && line.contains("denied")
            && line.contains("principal=alice")
            && line.contains("action=write")
            && line.contains("resource=topic:orders-internal")
    });
    assert!(logged, "no warning for alice's denied write: {log}");
}
