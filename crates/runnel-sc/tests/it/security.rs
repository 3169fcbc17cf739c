//! The SC with security on: logins, users and roles, authentication of
//! every request, authorization of every api, revocation, and the security
//! state SPUs receive. Real TLS connections on loopback, certificates from
//! a CA made in memory.

use runnel_api::{
    ApiVersionsRequest, ApplyPolicyRequest, CreateTopicRequest, DeleteTopicRequest,
    ElectPreferredRequest, ErrorCode, InitProducerIdRequest, ListPartitionsRequest,
    ListSpusRequest, ListTopicsRequest, LoginRequest, LoginResponse, RegisterSpuRequest, Reply,
    Request, RoleBindRequest, RoleCreateRequest, RoleListRequest, SpuConnectRequest,
    SpuHeartbeatRequest, UserAddRequest, UserDeleteRequest, UserListRequest, UserPasswdRequest,
    UserRevokeRequest, WatchMetadataRequest,
};
use runnel_auth::{Action, Binding, Effect, Policy, ResourcePattern, Role, Rule};
use runnel_metadata::{AssignmentUpdate, MetadataUpdate, MetadataView, SecurityState};
use runnel_pki::{PeerIdentity, PrincipalSource};
use runnel_sc::ScError;
use runnel_transport::{Connection, ResponseStream, TransportError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::support::{FakeSpu, Sc, Watcher, api_error, assert_error, bounded, name, topic_spec};
use crate::tls_support::{PASSWORD, Pki, SUPERUSER, SecureSc, now};

/// The principal and serial a certificate (PEM) names.
fn identity_of(cert_pem: &str) -> PeerIdentity {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate PEM");
    PeerIdentity::from_der(&der, PrincipalSource::CommonName).expect("a principal")
}

fn role(name: &str, effect: Effect, actions: &[Action], resources: &[&str]) -> Role {
    Role {
        name: name.to_string(),
        rules: vec![Rule {
            effect,
            actions: actions.to_vec(),
            resources: resources
                .iter()
                .map(|text| text.parse::<ResourcePattern>().expect("test pattern"))
                .collect(),
        }],
    }
}

fn binding(principal: &str, role: &str) -> Binding {
    Binding {
        principal: principal.to_string(),
        role: role.to_string(),
    }
}

async fn add_user(admin: &Connection, user: &str) {
    let request = UserAddRequest {
        name: user.to_string(),
        password: PASSWORD.to_string(),
    };
    bounded("UserAdd", admin.call(&request))
        .await
        .expect("user added");
}

async fn apply(admin: &Connection, policy: Policy) {
    bounded("ApplyPolicy", admin.call(&ApplyPolicyRequest { policy }))
        .await
        .expect("policy applied");
}

/// Revokes `serial` (any CA-signed certificate) and returns what the SC
/// revoked.
async fn revoke(admin: &Connection, serial: String) -> Vec<String> {
    bounded("revoke", admin.call(&UserRevokeRequest::Serial(serial)))
        .await
        .expect("revoked")
        .revoked
}

/// A login: the answer, and the key the certificate is for.
async fn login(
    sc: &SecureSc,
    user: &str,
    password: &str,
) -> Result<(LoginResponse, String), TransportError> {
    let key_and_csr = runnel_pki::generate_csr("what-the-csr-asks").expect("a CSR");
    let request = LoginRequest {
        user: user.to_string(),
        password: password.to_string(),
        csr_pem: key_and_csr.csr_pem,
        lifetime_secs: None,
    };
    let anonymous = sc.public_with(None).await;
    let response = bounded("Login", anonymous.call(&request)).await?;
    Ok((response, key_and_csr.key_pem))
}

/// A connection with the certificate a login issued.
async fn connect_as(sc: &SecureSc, (response, key_pem): &(LoginResponse, String)) -> Connection {
    sc.public_with(Some((&response.certificate_pem, key_pem)))
        .await
}

/// The refusal a connection presenting `identity` meets, at the
/// handshake or its first request.
async fn refused(addr: &str, sc: &SecureSc, identity: (&str, &str)) -> String {
    let config = sc.pki.client(Some(identity));
    let outcome = bounded("a refused connection", async {
        let connection = Connection::connect(addr, config).await?;
        connection.call(&ApiVersionsRequest {}).await
    })
    .await;
    match outcome {
        Err(TransportError::Refused(why)) => why,
        other => panic!("expected the server to refuse the certificate, got {other:?}"),
    }
}

/// Sends `request`; whether it was served.
async fn outcome<R, T>(client: &Connection, request: &R) -> Result<(), TransportError>
where
    R: Request<Response = Reply<T>>,
    T: DeserializeOwned,
{
    bounded("a request", client.call(request)).await.map(drop)
}

/// Receives updates until a security state that satisfies `done`.
async fn security_until(spu: &mut FakeSpu, done: impl Fn(&SecurityState) -> bool) -> SecurityState {
    for _ in 0..64 {
        if let AssignmentUpdate::Security(state) = spu.next().await
            && done(&state)
        {
            return state;
        }
    }
    panic!("SPU {} never received the expected security state", spu.id)
}

#[tokio::test]
async fn login_issues_a_certificate_for_the_user_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    add_user(&admin, "alice").await;

    let issued = login(&sc, "alice", PASSWORD).await.expect("logged in");
    let (response, _) = &issued;
    let identity = identity_of(&response.certificate_pem);
    assert_eq!(identity.principal, "alice", "whatever the CSR asked for");
    assert_eq!(response.principal, "alice");
    assert_eq!(identity.serial, response.serial);
    assert_eq!(identity.not_after_unix, response.not_after_unix);
    assert_eq!(response.ca_pem, sc.pki.ca.cert_pem());
    let longest = now().unix_timestamp() + runnel_sc::DEFAULT_MAX_CERT_LIFETIME.as_secs() as i64;
    assert!(response.not_after_unix <= longest, "{response:?}");

    // The SC takes the certificate's holder for alice, who may do nothing.
    let alice = connect_as(&sc, &issued).await;
    assert_error(
        bounded(
            "create",
            alice.call(&CreateTopicRequest {
                spec: topic_spec("orders", 1, 1),
            }),
        )
        .await,
        ErrorCode::PERMISSION_DENIED,
        "permission denied: alice may not create topic:orders",
    );

    // A wrong password and an unknown user meet the same answer.
    let wrong = api_error(login(&sc, "alice", "not the password").await);
    let unknown = api_error(login(&sc, "mallory", PASSWORD).await);
    let malformed = api_error(login(&sc, "no such/name", PASSWORD).await);
    for error in [&wrong, &unknown, &malformed] {
        assert_eq!(error.code, ErrorCode::AUTHENTICATION_FAILED, "{error:?}");
        assert_eq!(error.message, "wrong user name or password");
    }

    // The right password with a CSR that proves nothing.
    let request = LoginRequest {
        user: "alice".to_string(),
        password: PASSWORD.to_string(),
        csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .to_string(),
        lifetime_secs: None,
    };
    let anonymous = sc.public_with(None).await;
    let error = api_error(bounded("Login", anonymous.call(&request)).await);
    assert_eq!(error.code, ErrorCode::INVALID_CSR, "{error:?}");

    // A shorter lifetime is granted as asked.
    let key_and_csr = runnel_pki::generate_csr("alice").expect("a CSR");
    let request = LoginRequest {
        csr_pem: key_and_csr.csr_pem,
        lifetime_secs: Some(3600),
        ..request
    };
    let short = bounded("Login", anonymous.call(&request))
        .await
        .expect("logged in");
    assert!(
        short.not_after_unix <= now().unix_timestamp() + 3600,
        "{short:?}"
    );

    let users = bounded("UserList", admin.call(&UserListRequest {}))
        .await
        .expect("listed");
    assert_eq!(users.len(), 1);
    let serials: Vec<&str> = users[0]
        .certificates
        .iter()
        .map(|certificate| certificate.serial.as_str())
        .collect();
    assert_eq!(serials.len(), 2);
    for serial in [&response.serial, &short.serial] {
        assert!(serials.contains(&serial.as_str()), "{serials:?}");
    }
    sc.stop().await;
}

#[tokio::test]
async fn a_connection_without_a_certificate_may_only_ask_versions_and_log_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let anonymous = sc.public_with(None).await;
    bounded("ApiVersions", anonymous.call(&ApiVersionsRequest {}))
        .await
        .expect("versions");
    let login = api_error(login(&sc, "nobody", PASSWORD).await);
    assert_eq!(login.code, ErrorCode::AUTHENTICATION_FAILED, "{login:?}");

    let required = "this request needs a client certificate: run `runnel login` or set the \
                    profile's certificate and key";
    assert_error(
        bounded(
            "ListTopics",
            anonymous.call(&ListTopicsRequest { names: vec![] }),
        )
        .await,
        ErrorCode::AUTHENTICATION_REQUIRED,
        required,
    );
    assert_error(
        bounded("UserList", anonymous.call(&UserListRequest {})).await,
        ErrorCode::AUTHENTICATION_REQUIRED,
        required,
    );
    assert_error(
        bounded("InitProducerId", anonymous.call(&InitProducerIdRequest {})).await,
        ErrorCode::AUTHENTICATION_REQUIRED,
        required,
    );
    let mut watch = bounded(
        "WatchMetadata",
        anonymous.stream(&WatchMetadataRequest {}, 4),
    )
    .await
    .expect("the request is sent");
    match bounded("the watch's end", watch.next()).await {
        Some(Err(TransportError::Api(error))) => {
            assert_eq!(error.code, ErrorCode::AUTHENTICATION_REQUIRED, "{error:?}")
        }
        other => panic!("expected the watch to be refused, got {other:?}"),
    }
    sc.stop().await;
}

#[tokio::test]
async fn security_apis_need_security_on_and_logins_the_ca_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = Sc::start(dir.path(), std::time::Duration::from_secs(600)).await;
    let client = plain.client().await;
    for error in [
        api_error(bounded("UserList", client.call(&UserListRequest {})).await),
        api_error(
            bounded(
                "Login",
                client.call(&LoginRequest {
                    user: "alice".to_string(),
                    password: PASSWORD.to_string(),
                    csr_pem: String::new(),
                    lifetime_secs: None,
                }),
            )
            .await,
        ),
    ] {
        assert_eq!(error.code, ErrorCode::SECURITY_DISABLED, "{error:?}");
        assert!(error.message.contains("--tls"), "{error:?}");
    }
    plain.stop().await;

    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new();
    let config = runnel_sc::ScConfig {
        ca_key_pem: None,
        ..SecureSc::config(dir.path(), &pki)
    };
    let sc = SecureSc::start_with(config, pki).await;
    let admin = sc.as_principal(SUPERUSER).await;
    add_user(&admin, "alice").await;
    let error = api_error(login(&sc, "alice", PASSWORD).await);
    assert_eq!(error.code, ErrorCode::SECURITY_DISABLED, "{error:?}");
    assert!(
        error.message.contains("cannot issue certificates")
            && error.message.contains("--tls-ca-key"),
        "{error:?}"
    );
    sc.stop().await;
}

#[tokio::test]
async fn unusable_tls_material_stops_the_sc_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new();
    let mut garbled = SecureSc::config(dir.path(), &pki);
    if let Some(tls) = &mut garbled.tls {
        tls.cert_pem = b"not a certificate".to_vec();
    }
    let error = bounded("run", runnel_sc::run(garbled, CancellationToken::new()))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            &error,
            ScError::Tls {
                listener: "public",
                ..
            }
        ),
        "{error}"
    );

    let stranger = Pki::new();
    let foreign_key = runnel_sc::ScConfig {
        ca_key_pem: Some(stranger.ca.key_pem().as_bytes().to_vec()),
        ..SecureSc::config(dir.path(), &pki)
    };
    let error = bounded("run", runnel_sc::run(foreign_key, CancellationToken::new()))
        .await
        .expect_err("refused");
    assert!(matches!(error, ScError::CaKey(_)), "{error}");
    assert!(error.to_string().contains("does not belong"), "{error}");
}

#[tokio::test]
async fn security_settings_that_cannot_work_stop_the_sc_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new();
    let mut san_principals = SecureSc::config(dir.path(), &pki);
    if let Some(tls) = &mut san_principals.tls {
        tls.principal_source = PrincipalSource::SanDns;
    }
    let node_superuser = runnel_sc::ScConfig {
        superusers: vec![SUPERUSER.to_string(), "spu:1".to_string()],
        ..SecureSc::config(dir.path(), &pki)
    };
    for (config, text) in [
        (
            san_principals,
            "login certificates name their user in the common name only",
        ),
        (
            node_superuser,
            "superuser \"spu:1\" is a cluster node's identity",
        ),
    ] {
        let error = bounded("run", runnel_sc::run(config, CancellationToken::new()))
            .await
            .expect_err("refused");
        assert!(matches!(error, ScError::Security(_)), "{error}");
        assert!(error.to_string().contains(text), "{error}");
    }
}

/// Certificates that expire while their connections are open: the next
/// request fails, and the streams end without waiting for one, a watch
/// and an SPU session alike.
#[tokio::test]
async fn an_expired_certificate_fails_its_next_request_and_ends_its_streams() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    // Long enough for the connections to open, however busy the machine.
    let lifetime = time::Duration::seconds(4);
    let (cert, key) = sc.pki.lasting("alice", lifetime);
    let alice = sc.public_with(Some((&cert, &key))).await;
    let mut watch = Watcher::open(&alice).await;
    let (spu_cert, spu_key) = sc.pki.lasting("spu:1", lifetime);
    let mut spu = sc.spu_with(1, (&spu_cert, &spu_key)).await;
    let not_after = identity_of(&cert).not_after_unix;
    let last_not_after = not_after.max(identity_of(&spu_cert).not_after_unix);
    bounded("the certificates to expire", async {
        while now().unix_timestamp() <= last_not_after {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;

    let expired_at = runnel_pki::utc_text(not_after);
    assert_error(
        bounded("list", alice.call(&ListTopicsRequest { names: vec![] })).await,
        ErrorCode::AUTHENTICATION_FAILED,
        &format!(
            "the certificate naming alice expired at {expired_at}; get a new one with `runnel \
             login`"
        ),
    );
    let ended = bounded("the watch's end", async {
        loop {
            match watch.stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(TransportError::Api(error))) => return error,
                other => panic!("expected the watch to end with an error, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(ended.code, ErrorCode::AUTHENTICATION_FAILED, "{ended:?}");
    assert!(ended.message.contains("alice expired at"), "{ended:?}");
    let ended = spu.ended().await.expect("ended with an error");
    assert_eq!(ended.code, ErrorCode::AUTHENTICATION_FAILED, "{ended:?}");
    assert!(ended.message.contains("spu:1 expired at"), "{ended:?}");
    sc.stop().await;
}

/// Each SC api for a superuser, a principal allowed everything, one
/// whose deny rule overrides that allow, and one with no rule at all.
#[tokio::test]
async fn every_sc_api_is_authorized() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    let everything = ["cluster", "topic:*"];
    apply(
        &admin,
        Policy {
            roles: vec![
                role("everything", Effect::Allow, &[Action::Admin], &everything),
                role("nothing", Effect::Deny, &[Action::Admin], &everything),
            ],
            bindings: vec![
                binding("allowed", "everything"),
                binding("denied", "everything"),
                binding("denied", "nothing"),
            ],
        },
    )
    .await;
    bounded(
        "create",
        admin.call(&CreateTopicRequest {
            spec: topic_spec("existing", 1, 1),
        }),
    )
    .await
    .expect("created");

    for (principal, allowed) in [
        (SUPERUSER, true),
        ("allowed", true),
        ("denied", false),
        ("stranger", false),
    ] {
        let client = sc.as_principal(principal).await;
        let expect = |result: Result<(), TransportError>, what: &str| {
            if allowed {
                result.unwrap_or_else(|error| panic!("{principal} may {what}: {error}"));
            } else {
                assert_error(
                    result,
                    ErrorCode::PERMISSION_DENIED,
                    &format!("permission denied: {principal} may not {what}"),
                );
            }
        };
        let own = format!("t-{principal}");
        let create = CreateTopicRequest {
            spec: topic_spec(&own, 1, 1),
        };
        expect(
            outcome(&client, &create).await,
            &format!("create topic:{own}"),
        );
        let delete = DeleteTopicRequest { name: name(&own) };
        expect(
            outcome(&client, &delete).await,
            &format!("delete topic:{own}"),
        );

        let listed = bounded("list", client.call(&ListTopicsRequest { names: vec![] }))
            .await
            .expect("listing is filtered, not refused");
        let names: Vec<String> = listed
            .iter()
            .map(|topic| topic.spec.name.to_string())
            .collect();
        let visible: &[&str] = if allowed { &["existing"] } else { &[] };
        assert_eq!(names, visible, "{principal}");

        let named = ListTopicsRequest {
            names: vec![name("existing")],
        };
        expect(outcome(&client, &named).await, "describe topic:existing");
        let partitions = ListPartitionsRequest {
            topic: Some(name("existing")),
        };
        expect(
            outcome(&client, &partitions).await,
            "describe topic:existing",
        );
        expect(
            outcome(&client, &ListSpusRequest {}).await,
            "describe cluster",
        );
        let elect = ElectPreferredRequest {
            topic: None,
            partition: None,
        };
        expect(outcome(&client, &elect).await, "admin cluster");
        let register = RegisterSpuRequest {
            spec: crate::support::spu_spec(9),
        };
        expect(outcome(&client, &register).await, "admin cluster");
        expect(outcome(&client, &UserListRequest {}).await, "admin cluster");
        expect(outcome(&client, &RoleListRequest {}).await, "admin cluster");
        expect(
            outcome(&client, &InitProducerIdRequest {}).await,
            "write any topic",
        );
    }
    sc.stop().await;
}

#[tokio::test]
async fn lists_and_watches_show_only_what_the_principal_may_describe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    let _spu = sc.spu(1).await;
    for topic in ["public-a", "secret"] {
        bounded(
            "create",
            admin.call(&CreateTopicRequest {
                spec: topic_spec(topic, 2, 1),
            }),
        )
        .await
        .expect("created");
    }
    let reader = role(
        "reader",
        Effect::Allow,
        &[Action::Describe],
        &["topic:public-*"],
    );
    apply(
        &admin,
        Policy {
            roles: vec![reader],
            bindings: vec![binding("carol", "reader")],
        },
    )
    .await;

    let carol = sc.as_principal("carol").await;
    let topics = bounded("list", carol.call(&ListTopicsRequest { names: vec![] }))
        .await
        .expect("listed");
    assert_eq!(
        topics
            .iter()
            .map(|topic| topic.spec.name.to_string())
            .collect::<Vec<_>>(),
        ["public-a"]
    );
    let partitions = bounded(
        "partitions",
        carol.call(&ListPartitionsRequest { topic: None }),
    )
    .await
    .expect("listed");
    assert_eq!(partitions.len(), 2);
    assert!(
        partitions
            .iter()
            .all(|partition| partition.spec.key.topic == name("public-a")),
        "{partitions:?}"
    );
    assert_error(
        bounded(
            "list secret",
            carol.call(&ListTopicsRequest {
                names: vec![name("secret")],
            }),
        )
        .await,
        ErrorCode::PERMISSION_DENIED,
        "permission denied: carol may not describe topic:secret",
    );

    let mut watcher = Watcher::open(&carol).await;
    assert_eq!(
        watcher.view.topics.keys().collect::<Vec<_>>(),
        [&name("public-a")]
    );
    assert_eq!(watcher.view.partitions.len(), 2);
    assert_eq!(watcher.view.spus.len(), 1, "SPUs are not filtered");
    for topic in ["secret-2", "public-b"] {
        bounded(
            "create",
            admin.call(&CreateTopicRequest {
                spec: topic_spec(topic, 1, 1),
            }),
        )
        .await
        .expect("created");
    }
    watcher
        .until("public-b", |view| {
            view.topics.contains_key(&name("public-b"))
        })
        .await;
    // A change with nothing visible is not sent: its version alone would
    // tell that something hidden happened.
    for update in &watcher.updates {
        if let MetadataUpdate::Delta { version, changes } = update {
            assert!(!changes.is_empty(), "an empty change at version {version}");
        }
    }
    assert!(
        !watcher
            .view
            .topics
            .keys()
            .any(|topic| topic.as_str().starts_with("secret")),
        "{:?}",
        watcher.view.topics.keys()
    );

    // A wider role shows the watcher what it hid.
    let wider = role("reader", Effect::Allow, &[Action::Describe], &["topic:*"]);
    bounded(
        "RoleCreate",
        admin.call(&RoleCreateRequest {
            role: wider,
            replace: true,
        }),
    )
    .await
    .expect("replaced");
    watcher
        .until("the secret topics", |view| {
            view.topics.contains_key(&name("secret")) && view.topics.contains_key(&name("secret-2"))
        })
        .await;
    sc.stop().await;
}

/// A metadata watch whose watcher grants one item of credit and reads
/// nothing yet: the SC sends the first snapshot, then holds the next item
/// until the watcher reads.
async fn watch_holding_credit(client: &Connection) -> ResponseStream<MetadataUpdate> {
    bounded("WatchMetadata", client.stream(&WatchMetadataRequest {}, 1))
        .await
        .expect("WatchMetadata opens")
}

/// Creates `topic` and waits until `watcher` (with credit to spare) sees
/// it, by when the SC has taken the change up for every watch.
async fn create_seen(admin: &Connection, watcher: &mut Watcher, topic: &str) {
    bounded(
        "create",
        admin.call(&CreateTopicRequest {
            spec: topic_spec(topic, 1, 1),
        }),
    )
    .await
    .expect("created");
    watcher
        .until(topic, |view| view.topics.contains_key(&name(topic)))
        .await;
}

/// Items of `stream` until it ends with an error, at most `most`.
async fn items_then_error<T: DeserializeOwned + std::fmt::Debug>(
    stream: &mut ResponseStream<T>,
    most: usize,
) -> (Vec<T>, runnel_api::ApiError) {
    let mut items = Vec::new();
    for _ in 0..=most {
        match bounded("the stream's next item", stream.next()).await {
            Some(Ok(item)) => items.push(item),
            Some(Err(TransportError::Api(error))) => return (items, error),
            other => panic!("expected an item or an error, got {other:?}; before: {items:?}"),
        }
    }
    panic!("the stream did not end after {most} items: {items:?}")
}

/// An item that waited for the watcher's credit while the policy
/// narrowed is judged by the new policy: the watcher never sees the topic
/// it may no longer describe, only a fresh snapshot without it.
#[tokio::test]
async fn a_watcher_holding_back_credit_gets_nothing_a_narrower_policy_hides() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    let _spu = sc.spu(1).await;
    let mut admin_watch = Watcher::open(&admin).await;
    create_seen(&admin, &mut admin_watch, "public-a").await;
    let everything = role("reader", Effect::Allow, &[Action::Describe], &["topic:*"]);
    apply(
        &admin,
        Policy {
            roles: vec![everything],
            bindings: vec![binding("carol", "reader")],
        },
    )
    .await;
    let carol = sc.as_principal("carol").await;
    let mut held = watch_holding_credit(&carol).await;

    // The change waits for credit, filtered by the policy of the time.
    create_seen(&admin, &mut admin_watch, "secret").await;
    let public_only = role(
        "reader",
        Effect::Allow,
        &[Action::Describe],
        &["topic:public-*"],
    );
    apply(
        &admin,
        Policy {
            roles: vec![public_only],
            bindings: vec![binding("carol", "reader")],
        },
    )
    .await;

    let mut view = MetadataView::default();
    let mut received = Vec::new();
    for _ in 0..2 {
        let update = match bounded("an update", held.next()).await {
            Some(Ok(update)) => update,
            other => panic!("expected an update, got {other:?}; before: {received:?}"),
        };
        received.push(update.clone());
        view.apply(update);
    }
    assert!(
        received
            .iter()
            .all(|update| matches!(update, MetadataUpdate::Snapshot { .. })),
        "the change that waited is replaced by a snapshot: {received:?}"
    );
    assert_eq!(view.topics.keys().collect::<Vec<_>>(), [&name("public-a")]);
    assert!(
        view.partitions
            .keys()
            .all(|key| key.topic == name("public-a")),
        "{:?}",
        view.partitions.keys()
    );
    sc.stop().await;
}

/// An item that waited for the watcher's credit while its certificate
/// was revoked does not go: the watch ends with the refusal instead.
#[tokio::test]
async fn a_watcher_holding_back_credit_gets_nothing_once_revoked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    let _spu = sc.spu(1).await;
    let mut admin_watch = Watcher::open(&admin).await;
    let everything = role("reader", Effect::Allow, &[Action::Describe], &["topic:*"]);
    apply(
        &admin,
        Policy {
            roles: vec![everything],
            bindings: vec![binding("carol", "reader")],
        },
    )
    .await;
    let (cert, key) = sc.pki.identity("carol");
    let carol = sc.public_with(Some((&cert, &key))).await;
    let mut held = watch_holding_credit(&carol).await;

    create_seen(&admin, &mut admin_watch, "public-a").await;
    revoke(&admin, identity_of(&cert).serial).await;

    let (items, error) = items_then_error(&mut held, 1).await;
    assert_eq!(error.code, ErrorCode::AUTHENTICATION_FAILED, "{error:?}");
    assert!(error.message.contains("has been revoked"), "{error:?}");
    assert!(
        items
            .iter()
            .all(|update| matches!(update, MetadataUpdate::Snapshot { .. })),
        "at most the first snapshot, sent before the revocation: {items:?}"
    );
    sc.stop().await;
}

/// An update that waited for the SPU's credit while its certificate was
/// revoked does not go: the session ends with the refusal instead.
#[tokio::test]
async fn an_spu_holding_back_credit_gets_nothing_once_revoked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    let (cert, key) = sc.pki.identity("spu:3");
    // The snapshot goes at once; the security state after it waits for
    // credit.
    let mut spu = sc.spu_with_credit(3, (&cert, &key), 1).await;
    revoke(&admin, identity_of(&cert).serial).await;

    let (items, error) = items_then_error(&mut spu.assignments, 1).await;
    assert_eq!(error.code, ErrorCode::AUTHENTICATION_FAILED, "{error:?}");
    assert!(
        items
            .iter()
            .all(|update| matches!(update, AssignmentUpdate::Snapshot { .. })),
        "at most the snapshot, sent before the revocation: {items:?}"
    );
    sc.stop().await;
}

#[tokio::test]
async fn node_identities_act_only_for_themselves_on_the_private_listener() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;

    let spu1 = sc.node("spu:1").await;
    let mut posing = bounded(
        "SpuConnect",
        spu1.stream(
            &SpuConnectRequest {
                spec: crate::support::spu_spec(2),
            },
            4,
        ),
    )
    .await
    .expect("the request is sent");
    match bounded("the refusal", posing.next()).await {
        Some(Err(TransportError::Api(error))) => {
            assert_eq!(error.code, ErrorCode::PERMISSION_DENIED, "{error:?}");
            assert_eq!(
                error.message,
                "permission denied: spu:1 may not act as SPU 2"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let heartbeat = SpuHeartbeatRequest {
        id: runnel_types::SpuId(2),
        replicas: vec![],
    };
    assert_error(
        bounded("heartbeat", spu1.call(&heartbeat)).await,
        ErrorCode::PERMISSION_DENIED,
        "permission denied: spu:1 may not act as SPU 2",
    );
    // As itself, it passes authorization (and is not connected yet).
    let own = SpuHeartbeatRequest {
        id: runnel_types::SpuId(1),
        replicas: vec![],
    };
    assert_error(
        bounded("heartbeat", spu1.call(&own)).await,
        ErrorCode::SPU_NOT_FOUND,
        "not connected",
    );

    let sc_identity = sc.node("sc").await;
    assert_error(
        bounded("heartbeat", sc_identity.call(&own)).await,
        ErrorCode::PERMISSION_DENIED,
        "permission denied: sc may not act as SPU 1",
    );

    // A node identity may not use the clients' apis.
    let spu_on_public = sc.as_principal("spu:1").await;
    assert_error(
        bounded(
            "list",
            spu_on_public.call(&ListTopicsRequest { names: vec![] }),
        )
        .await,
        ErrorCode::PERMISSION_DENIED,
        "spu:1 is a cluster node identity",
    );

    // A client's certificate does not open the private listener.
    let (cert, key) = sc.pki.identity(SUPERUSER);
    let why = refused(&sc.private_addr, &sc, (&cert, &key)).await;
    assert!(why.contains("cluster nodes only"), "{why}");
    sc.stop().await;
}

#[tokio::test]
async fn a_revoked_certificate_fails_its_next_request_and_every_handshake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    add_user(&admin, "alice").await;
    let issued = login(&sc, "alice", PASSWORD).await.expect("logged in");
    let alice = connect_as(&sc, &issued).await;
    bounded("list", alice.call(&ListTopicsRequest { names: vec![] }))
        .await
        .expect("alice is served");
    let mut watch = Watcher::open(&alice).await;

    let revoked = bounded(
        "revoke",
        admin.call(&UserRevokeRequest::User("alice".to_string())),
    )
    .await
    .expect("revoked");
    assert_eq!(revoked.revoked, [issued.0.serial.as_str()]);
    assert_error(
        bounded("list", alice.call(&ListTopicsRequest { names: vec![] })).await,
        ErrorCode::AUTHENTICATION_FAILED,
        "has been revoked",
    );
    match bounded("the watch's end", watch.stream.next()).await {
        Some(Err(TransportError::Api(error))) => {
            assert_eq!(error.code, ErrorCode::AUTHENTICATION_FAILED, "{error:?}")
        }
        other => panic!("expected the watch to end, got {other:?}"),
    }
    let identity = (issued.0.certificate_pem.as_str(), issued.1.as_str());
    let why = refused(&sc.public_addr, &sc, identity).await;
    assert!(why.contains("revoked"), "{why}");
    let again = bounded(
        "revoke again",
        admin.call(&UserRevokeRequest::User("alice".to_string())),
    )
    .await
    .expect("nothing left to revoke");
    assert_eq!(again.revoked, Vec::<String>::new());

    // Any certificate of the CA, by serial, as someone may type it.
    let (cert, key) = sc.pki.identity(SUPERUSER);
    let serial = identity_of(&cert).serial;
    let typed = format!("000{}", serial.to_uppercase());
    assert_eq!(revoke(&admin, typed).await, [serial]);
    let why = refused(&sc.public_addr, &sc, (&cert, &key)).await;
    assert!(why.contains("revoked"), "{why}");
    bounded("list", admin.call(&ListTopicsRequest { names: vec![] }))
        .await
        .expect("another certificate of the superuser still works");
    sc.stop().await;
}

#[tokio::test]
async fn spus_receive_the_security_state_after_the_snapshot_and_each_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    let mut spu = sc.spu(1).await;
    assert!(
        matches!(spu.next().await, AssignmentUpdate::Snapshot { .. }),
        "the snapshot comes first"
    );
    let initial = match spu.next().await {
        AssignmentUpdate::Security(state) => state,
        other => panic!("expected the security state after the snapshot, got {other:?}"),
    };
    assert_eq!(
        initial,
        SecurityState {
            superusers: vec![SUPERUSER.to_string()],
            policy: Policy::default(),
            revoked: vec![],
        }
    );

    let policy = Policy {
        roles: vec![role(
            "writer",
            Effect::Allow,
            &[Action::Write],
            &["topic:*"],
        )],
        bindings: vec![binding("alice", "writer")],
    };
    apply(&admin, policy.clone()).await;
    let state = security_until(&mut spu, |state| state.policy == policy).await;
    assert_eq!(state.revoked, Vec::<String>::new());

    revoke(&admin, "0abc".to_string()).await;
    let state = security_until(&mut spu, |state| !state.revoked.is_empty()).await;
    assert_eq!(state.revoked, ["0abc"]);
    assert_eq!(state.policy, policy, "the state comes whole");

    // A session lives through other nodes' revocations and ends with its
    // own certificate's.
    let (cert, key) = sc.pki.identity("spu:3");
    let mut spu3 = sc.spu_with(3, (&cert, &key)).await;
    let other = identity_of(&sc.pki.identity("spu:2").0).serial;
    revoke(&admin, other.clone()).await;
    security_until(&mut spu3, |state| state.revoked.contains(&other)).await;
    let own = identity_of(&cert).serial;
    revoke(&admin, own).await;
    let ended = spu3.ended().await.expect("ended with an error");
    assert_eq!(ended.code, ErrorCode::AUTHENTICATION_FAILED, "{ended:?}");
    sc.stop().await;
}

#[tokio::test]
async fn users_roles_and_revocations_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    add_user(&admin, "alice").await;
    add_user(&admin, "bob").await;
    let policy = Policy {
        roles: vec![role(
            "reader",
            Effect::Allow,
            &[Action::Describe],
            &["topic:*"],
        )],
        bindings: vec![binding("alice", "reader")],
    };
    apply(&admin, policy.clone()).await;
    let first = login(&sc, "alice", PASSWORD).await.expect("logged in");
    let second = login(&sc, "alice", PASSWORD).await.expect("logged in");
    revoke(&admin, first.0.serial.clone()).await;
    let users = bounded("users", admin.call(&UserListRequest {}))
        .await
        .expect("listed");
    let config = SecureSc::config(dir.path(), &sc.pki);
    let pki = sc.stop().await;

    let sc = SecureSc::start_with(config, pki).await;
    let admin = sc.as_principal(SUPERUSER).await;
    let after = bounded("users", admin.call(&UserListRequest {}))
        .await
        .expect("listed");
    assert_eq!(after, users);
    assert_eq!(after[0].roles, ["reader"]);
    let mut certificates: Vec<(&str, bool)> = after[0]
        .certificates
        .iter()
        .map(|certificate| (certificate.serial.as_str(), certificate.revoked))
        .collect();
    certificates.sort();
    let mut expected = vec![
        (first.0.serial.as_str(), true),
        (second.0.serial.as_str(), false),
    ];
    expected.sort();
    assert_eq!(certificates, expected);
    let roles = bounded("roles", admin.call(&RoleListRequest {}))
        .await
        .expect("listed");
    assert_eq!(roles, policy);

    let identity = (first.0.certificate_pem.as_str(), first.1.as_str());
    let why = refused(&sc.public_addr, &sc, identity).await;
    assert!(why.contains("revoked"), "{why}");
    let alice = connect_as(&sc, &second).await;
    bounded("list", alice.call(&ListTopicsRequest { names: vec![] }))
        .await
        .expect("the unrevoked certificate still works");
    login(&sc, "bob", PASSWORD)
        .await
        .expect("passwords are kept");
    sc.stop().await;
}

#[tokio::test]
async fn users_and_roles_are_managed_with_clear_refusals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = SecureSc::start(dir.path(), Pki::new()).await;
    let admin = sc.as_principal(SUPERUSER).await;
    let add = |name: &str, password: &str| UserAddRequest {
        name: name.to_string(),
        password: password.to_string(),
    };
    for (request, code, text) in [
        (
            add("alice", "short"),
            ErrorCode::INVALID_CONFIG,
            "8 to 1024 bytes",
        ),
        (add("sc", PASSWORD), ErrorCode::INVALID_CONFIG, "node name"),
        (
            add(SUPERUSER, PASSWORD),
            ErrorCode::INVALID_CONFIG,
            "admin is a superuser of this SC; a password login for it would hand out superuser \
             certificates",
        ),
        (
            add("spu:1", PASSWORD),
            ErrorCode::INVALID_CONFIG,
            "invalid user name",
        ),
    ] {
        assert_error(bounded("UserAdd", admin.call(&request)).await, code, text);
    }
    add_user(&admin, "alice").await;
    assert_error(
        bounded("UserAdd", admin.call(&add("alice", PASSWORD))).await,
        ErrorCode::USER_EXISTS,
        "already exists",
    );

    // A new password replaces the old one.
    let passwd = UserPasswdRequest {
        name: "alice".to_string(),
        password: "a new long password".to_string(),
    };
    bounded("UserPasswd", admin.call(&passwd))
        .await
        .expect("changed");
    let old = api_error(login(&sc, "alice", PASSWORD).await);
    assert_eq!(old.code, ErrorCode::AUTHENTICATION_FAILED);
    let issued = login(&sc, "alice", "a new long password")
        .await
        .expect("the new password works");
    assert_error(
        bounded(
            "UserPasswd",
            admin.call(&UserPasswdRequest {
                name: "bob".to_string(),
                ..passwd
            }),
        )
        .await,
        ErrorCode::USER_NOT_FOUND,
        "user 'bob' does not exist",
    );

    // Roles: created once, replaced when asked, bound to existing roles.
    let reader = role("reader", Effect::Allow, &[Action::Read], &["topic:a-*"]);
    let create = |role: Role, replace: bool| RoleCreateRequest { role, replace };
    bounded("RoleCreate", admin.call(&create(reader.clone(), false)))
        .await
        .expect("created");
    assert_error(
        bounded("RoleCreate", admin.call(&create(reader, false))).await,
        ErrorCode::ROLE_EXISTS,
        "role 'reader' already exists",
    );
    let wider = role("reader", Effect::Allow, &[Action::Read], &["topic:*"]);
    bounded("RoleCreate", admin.call(&create(wider.clone(), true)))
        .await
        .expect("replaced");
    let mut empty = wider.clone();
    empty.name = "empty".to_string();
    empty.rules[0].actions.clear();
    assert_error(
        bounded("RoleCreate", admin.call(&create(empty, false))).await,
        ErrorCode::INVALID_POLICY,
        "lists no actions",
    );
    let bind = |principal: &str, role: &str, unbind: bool| RoleBindRequest {
        binding: binding(principal, role),
        unbind,
    };
    assert_error(
        bounded("RoleBind", admin.call(&bind("alice", "writer", false))).await,
        ErrorCode::ROLE_NOT_FOUND,
        "role 'writer' does not exist",
    );
    for _ in 0..2 {
        bounded("RoleBind", admin.call(&bind("alice", "reader", false)))
            .await
            .expect("bound, once");
    }
    bounded("RoleBind", admin.call(&bind("svc.orders", "reader", false)))
        .await
        .expect("bound");
    assert_error(
        bounded("RoleBind", admin.call(&bind("bob", "reader", true))).await,
        ErrorCode::ROLE_NOT_FOUND,
        "bob is not bound to role 'reader'",
    );
    let policy = bounded("RoleList", admin.call(&RoleListRequest {}))
        .await
        .expect("listed");
    assert_eq!(policy.roles, [wider]);
    assert_eq!(
        policy.bindings,
        [binding("alice", "reader"), binding("svc.orders", "reader")]
    );
    let users = bounded("UserList", admin.call(&UserListRequest {}))
        .await
        .expect("listed");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].roles, ["reader"]);
    assert_eq!(users[0].certificates.len(), 1);
    assert!(!users[0].certificates[0].revoked);

    // Deleting a user revokes their certificates and drops their bindings.
    let alice = connect_as(&sc, &issued).await;
    bounded(
        "UserDelete",
        admin.call(&UserDeleteRequest {
            name: "alice".to_string(),
        }),
    )
    .await
    .expect("deleted");
    assert_error(
        bounded("list", alice.call(&ListTopicsRequest { names: vec![] })).await,
        ErrorCode::AUTHENTICATION_FAILED,
        "has been revoked",
    );
    let policy = bounded("RoleList", admin.call(&RoleListRequest {}))
        .await
        .expect("listed");
    assert_eq!(policy.bindings, [binding("svc.orders", "reader")]);
    let users = bounded("UserList", admin.call(&UserListRequest {}))
        .await
        .expect("listed");
    assert_eq!(users, []);
    assert_error(
        bounded(
            "UserDelete",
            admin.call(&UserDeleteRequest {
                name: "alice".to_string(),
            }),
        )
        .await,
        ErrorCode::USER_NOT_FOUND,
        "does not exist",
    );

    // A policy is applied whole, or not at all.
    let dangling = Policy {
        roles: vec![],
        bindings: vec![binding("carol", "ghost")],
    };
    assert_error(
        bounded(
            "ApplyPolicy",
            admin.call(&ApplyPolicyRequest { policy: dangling }),
        )
        .await,
        ErrorCode::INVALID_POLICY,
        "which the policy does not define",
    );
    let policy = bounded("RoleList", admin.call(&RoleListRequest {}))
        .await
        .expect("listed");
    assert_eq!(policy.bindings, [binding("svc.orders", "reader")]);
    let applied = bounded(
        "ApplyPolicy",
        admin.call(&ApplyPolicyRequest {
            policy: Policy::default(),
        }),
    )
    .await
    .expect("applied");
    assert_eq!((applied.roles, applied.bindings), (0, 0));
    sc.stop().await;
}
