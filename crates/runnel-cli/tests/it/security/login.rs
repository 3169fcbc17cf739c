//! `runnel login` end to end: an admin adds a user and grants a role; the
//! user logs in with a password and gets a certificate for a key made on
//! their machine; produces and consumes with it; the admin revokes it and
//! it is refused everywhere.

use std::os::unix::fs::PermissionsExt;

use runnel_pki::{PeerIdentity, PrincipalSource};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::SecureCluster;
use crate::support::text;

const PASSWORD: &[u8] = b"correct horse battery staple\n";

fn login(secure: &SecureCluster, password: &[u8]) -> std::process::Output {
    let ca = secure.tls_file("ca.pem").display().to_string();
    let sc = secure.listener(0);
    secure.run_as(
        "alice",
        &[
            "login",
            &sc,
            "--user",
            "alice",
            "--tls-ca",
            &ca,
            "--password-stdin",
        ],
        password,
    )
}

#[test]
fn a_user_logs_in_produces_and_consumes_then_is_revoked() {
    let secure = SecureCluster::start(1);
    let cluster = &secure.cluster;
    cluster.ok(&["topic", "create", "greetings"]);
    let added = cluster.run(&["user", "add", "alice", "--password-stdin"], PASSWORD);
    assert!(added.status.success(), "{}", text(&added.stderr));
    cluster.ok(&[
        "role",
        "create",
        "greeter",
        "--allow",
        "read,write=topic:greetings",
    ]);
    cluster.ok(&["role", "bind", "greeter", "alice"]);

    let wrong = login(&secure, b"not the password\n");
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("wrong user name or password"),
        "{}",
        text(&wrong.stderr)
    );

    let logged_in = login(&secure, PASSWORD);
    assert!(logged_in.status.success(), "{}", text(&logged_in.stderr));

    // The profile holds a key only its owner reads, and a certificate
    // that names the user.
    let dir = cluster.home.path().join("profiles").join("alice");
    let key_mode = std::fs::metadata(dir.join("key.pem"))
        .expect("the key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o077, 0, "the key is private: {key_mode:o}");
    let cert_pem = std::fs::read(dir.join("cert.pem")).expect("the certificate");
    let cert = CertificateDer::from_pem_slice(&cert_pem).expect("a certificate");
    let identity = PeerIdentity::from_der(&cert, PrincipalSource::CommonName).expect("a principal");
    assert_eq!(identity.principal, "alice");

    secure.ok_as("alice", &["produce", "greetings"], b"hello from alice\n");
    let consumed = secure.ok_as("alice", &["consume", "greetings", "-B", "-d"], b"");
    assert_eq!(consumed, "hello from alice\n");

    // `login` made alice's profile current; the admin names theirs.
    let users = secure.ok_as("local", &["user", "list", "-O", "json"], b"");
    assert!(
        users.contains("alice") && users.contains(&identity.serial),
        "{users}"
    );

    secure.ok_as("local", &["user", "revoke", "alice"], b"");
    let refused = secure.fails_as("alice", &["produce", "greetings"], b"after revoke\n");
    assert!(refused.contains("revoked"), "{refused}");
    let refused = secure.fails_as("alice", &["consume", "greetings", "-B", "-d"], b"");
    assert!(refused.contains("revoked"), "{refused}");
    assert_eq!(
        secure.ok_as("local", &["consume", "greetings", "-B", "-d"], b""),
        "hello from alice\n"
    );

    // Revocation is per certificate: a new login gets a new one.
    let again = login(&secure, PASSWORD);
    assert!(again.status.success(), "{}", text(&again.stderr));
    secure.ok_as("alice", &["produce", "greetings"], b"back again\n");

    // A deleted user can no longer log in, and their certificates stop
    // working.
    secure.ok_as("local", &["user", "delete", "alice"], b"");
    let refused = secure.fails_as("alice", &["produce", "greetings"], b"deleted\n");
    assert!(refused.contains("revoked"), "{refused}");
    let gone = login(&secure, PASSWORD);
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).contains("wrong user name or password"),
        "{}",
        text(&gone.stderr)
    );
}
