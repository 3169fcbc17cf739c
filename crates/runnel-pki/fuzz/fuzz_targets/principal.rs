//! Feeds arbitrary bytes to `PeerIdentity::from_der` with every principal
//! source: what a TLS peer controls once the handshake accepted its chain.
//! Nothing may panic, and whatever is accepted must obey the principal and
//! serial rules the rest of the cluster relies on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_pki::{PeerIdentity, PrincipalSource, SERIAL_LEN_MAX, validate_principal};

const SOURCES: [PrincipalSource; 4] = [
    PrincipalSource::CommonName,
    PrincipalSource::SanDns,
    PrincipalSource::SanEmail,
    PrincipalSource::SanUri,
];

fuzz_target!(|data: &[u8]| {
    for source in SOURCES {
        if let Ok(identity) = PeerIdentity::from_der(data, source) {
            assert!(validate_principal(&identity.principal).is_ok());
            assert!(!identity.serial.is_empty());
            assert!(identity.serial.len() <= 2 * SERIAL_LEN_MAX);
            assert!(!identity.serial.starts_with("00"));
            assert!(
                identity
                    .serial
                    .bytes()
                    .all(|digit| matches!(digit, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
    }
});
