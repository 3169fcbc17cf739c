//! Feeds arbitrary text to `ClusterCa::sign_csr`: what anyone who can log
//! in sends the SC. Nothing may panic, and a certificate signed for any
//! input must name exactly the user the SC authenticated.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use runnel_pki::{ClusterCa, PeerIdentity, PrincipalSource};
use time::{Duration, OffsetDateTime};

/// One CA for the whole run: generating a key per input would drown the
/// parser under test in key generation.
fn ca() -> &'static ClusterCa {
    static CA: OnceLock<ClusterCa> = OnceLock::new();
    CA.get_or_init(|| {
        ClusterCa::generate("fuzz", now(), Duration::days(365)).expect("a CA generates")
    })
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_750_000_000).expect("a valid timestamp")
}

fn x509_der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .expect("a signed certificate is PEM")
        .1
        .contents
}

fuzz_target!(|data: &[u8]| {
    let Ok(csr_pem) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(signed) = ca().sign_csr(csr_pem, "alice", now(), Duration::days(1)) {
        let der = &x509_der(&signed.cert_pem);
        let identity = PeerIdentity::from_der(der, PrincipalSource::CommonName)
            .expect("a signed certificate reads back");
        assert_eq!(identity.principal, "alice");
        assert_eq!(identity.serial, signed.serial);
        for source in [
            PrincipalSource::SanDns,
            PrincipalSource::SanEmail,
            PrincipalSource::SanUri,
        ] {
            assert!(PeerIdentity::from_der(der, source).is_err());
        }
    }
});
