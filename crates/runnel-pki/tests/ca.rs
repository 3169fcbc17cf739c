//! The cluster CA: generation, loading, issuing node certificates and
//! signing user CSRs, checked by reading the results back with x509-parser.

use std::net::IpAddr;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PublicKeyData, SanType,
    SignatureAlgorithm,
};
use runnel_pki::{
    CSR_PEM_LEN_MAX, ClusterCa, PeerIdentity, PkiError, PrincipalSource, generate_csr, hostile,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap()
}

fn ca() -> ClusterCa {
    ClusterCa::generate("prod", now(), Duration::days(3650)).unwrap()
}

fn der_of(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, certificate) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    certificate
}

/// Asserts that `der` is signed by the CA's key.
fn assert_signed_by(der: &[u8], ca: &ClusterCa) {
    let ca_certificate = parse(ca.cert_der());
    parse(der)
        .verify_signature(Some(ca_certificate.public_key()))
        .unwrap();
}

fn common_names(certificate: &X509Certificate<'_>) -> Vec<String> {
    certificate
        .subject()
        .iter_common_name()
        .map(|name| name.as_str().unwrap().to_owned())
        .collect()
}

/// PEM encoding, to hand tampered DER back to `sign_csr`.
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = String::new();
    for chunk in der.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (index, &byte)| {
            bits | u32::from(byte) << (16 - 8 * index)
        });
        for position in 0..4 {
            if position <= chunk.len() {
                base64.push(ALPHABET[(bits >> (18 - 6 * position) & 0x3f) as usize] as char);
            } else {
                base64.push('=');
            }
        }
    }
    let lines: Vec<&str> = base64
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[test]
fn generated_ca_is_a_ca_and_reloads() {
    let ca = ca();
    let certificate = parse(ca.cert_der());
    assert_eq!(common_names(&certificate), ["prod Runnel CA"]);
    assert!(certificate.is_ca());
    certificate.verify_signature(None).unwrap();
    assert_eq!(
        certificate.validity().not_before.timestamp(),
        now().unix_timestamp() - 60
    );
    assert_eq!(
        certificate.validity().not_after.timestamp(),
        (now() + Duration::days(3650)).unix_timestamp()
    );
    assert_eq!(der_of(ca.cert_pem()), ca.cert_der());

    let reloaded = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    let issued = reloaded
        .issue("sc", &[], &[], now(), Duration::days(1))
        .unwrap();
    assert_signed_by(&der_of(&issued.cert_pem), &ca);
}

#[test]
fn from_pem_refuses_a_key_of_another_ca() {
    let first = ca();
    let second = ca();
    let mismatched = ClusterCa::from_pem(first.cert_pem(), second.key_pem());
    assert!(
        matches!(mismatched, Err(PkiError::KeyMismatch)),
        "{mismatched:?}"
    );
}

#[test]
fn from_pem_refuses_leaf_certificates_and_junk() {
    let ca = ca();
    let leaf = ca.issue("sc", &[], &[], now(), Duration::days(1)).unwrap();
    let not_ca = ClusterCa::from_pem(&leaf.cert_pem, &leaf.key_pem);
    assert!(matches!(not_ca, Err(PkiError::NotCa)), "{not_ca:?}");

    let junk = ClusterCa::from_pem("not a certificate", ca.key_pem());
    assert!(
        matches!(junk, Err(PkiError::CaCertificatePem { .. })),
        "{junk:?}"
    );
    let key_as_cert = ClusterCa::from_pem(ca.key_pem(), ca.key_pem());
    assert!(
        matches!(key_as_cert, Err(PkiError::CaCertificatePem { .. })),
        "{key_as_cert:?}"
    );
    let bad_key = ClusterCa::from_pem(ca.cert_pem(), "not a key");
    assert!(
        matches!(bad_key, Err(PkiError::CaKey { .. })),
        "{bad_key:?}"
    );
}

#[test]
fn generate_refuses_bad_names_and_lifetimes() {
    let spaced = ClusterCa::generate("my cluster", now(), Duration::days(1));
    assert!(
        matches!(
            spaced,
            Err(PkiError::InvalidName {
                what: "cluster name",
                ..
            })
        ),
        "{spaced:?}"
    );
    let zero = ClusterCa::generate("prod", now(), Duration::ZERO);
    assert!(
        matches!(zero, Err(PkiError::NonPositiveLifetime { .. })),
        "{zero:?}"
    );
    let ca = ca();
    let too_long = ca.issue("sc", &[], &[], now(), Duration::days(3_000_000));
    assert!(
        matches!(too_long, Err(PkiError::ValidityOutOfRange)),
        "{too_long:?}"
    );
    let huge = ca.issue("sc", &[], &[], now(), Duration::MAX);
    assert!(
        matches!(huge, Err(PkiError::ValidityOutOfRange)),
        "{huge:?}"
    );
}

#[test]
fn issue_round_trips_through_from_der() {
    let ca = ca();
    let dns = vec!["spu-1.runnel.local".to_owned(), "localhost".to_owned()];
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let issued = ca
        .issue("spu-1", &dns, &ips, now(), Duration::days(90))
        .unwrap();
    let der = der_of(&issued.cert_pem);
    assert_signed_by(&der, &ca);

    let identity = PeerIdentity::from_der(&der, PrincipalSource::CommonName).unwrap();
    assert_eq!(
        identity,
        PeerIdentity {
            principal: "spu-1".to_owned(),
            serial: issued.serial.clone(),
            not_after_unix: issued.not_after_unix,
        }
    );
    assert_eq!(
        issued.not_after_unix,
        (now() + Duration::days(90)).unix_timestamp()
    );
    // 16 random bytes, top bit clear and the next set: always 32 hex digits.
    assert_eq!(issued.serial.len(), 32);
    assert!(
        issued
            .serial
            .bytes()
            .all(|digit| matches!(digit, b'0'..=b'9' | b'a'..=b'f'))
    );
    let certificate = parse(&der);
    assert_eq!(
        issued.serial,
        certificate.raw_serial_as_string().replace(':', "")
    );

    let eku = certificate.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!certificate.is_ca());
    let sans = &certificate
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(
        sans,
        &[
            GeneralName::DNSName("spu-1.runnel.local"),
            GeneralName::DNSName("localhost"),
            GeneralName::IPAddress(&[127, 0, 0, 1]),
            GeneralName::IPAddress(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ]
    );

    // The key is the certificate's.
    let key = KeyPair::from_pem(&issued.key_pem).unwrap();
    assert_eq!(
        certificate.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
}

#[test]
fn issue_refuses_bad_names() {
    let ca = ca();
    let spaced = ca.issue("node one", &[], &[], now(), Duration::days(1));
    assert!(
        matches!(
            spaced,
            Err(PkiError::InvalidName {
                what: "common name",
                ..
            })
        ),
        "{spaced:?}"
    );
    for bad_dns in ["", "nœud.example"] {
        let issued = ca.issue(
            "spu-1",
            &[bad_dns.to_owned()],
            &[],
            now(),
            Duration::days(1),
        );
        assert!(
            matches!(issued, Err(PkiError::InvalidDnsName { .. })),
            "{issued:?}"
        );
    }
}

#[test]
fn serials_differ_between_certificates() {
    let ca = ca();
    let first = ca.issue("sc", &[], &[], now(), Duration::days(1)).unwrap();
    let second = ca.issue("sc", &[], &[], now(), Duration::days(1)).unwrap();
    assert_ne!(first.serial, second.serial);
}

#[test]
fn sign_csr_takes_only_the_public_key() {
    let ca = ca();
    // A CSR that asks for everything: the SC's name, SANs, serverAuth, CA
    // rights and an extension rcgen's own CSR reader would refuse.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["sc.runnel.local".to_owned()]).unwrap();
    params.distinguished_name = subject_cn("sc");
    params
        .subject_alt_names
        .push(SanType::URI(Ia5String::try_from("urn:runnel:sc").unwrap()));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &[1, 2, 3, 4],
            vec![0x05, 0x00],
        ));
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();

    let signed = ca
        .sign_csr(&csr_pem, "alice", now(), Duration::days(7))
        .unwrap();
    let der = der_of(&signed.cert_pem);
    assert_signed_by(&der, &ca);
    let certificate = parse(&der);
    assert_eq!(common_names(&certificate), ["alice"]);
    assert_eq!(certificate.subject().iter_attributes().count(), 1);
    assert!(certificate.subject_alternative_name().unwrap().is_none());
    assert!(!certificate.is_ca());
    let eku = certificate.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth);
    assert!(!eku.server_auth && !eku.any && eku.other.is_empty());
    assert!(
        certificate
            .iter_extensions()
            .all(|extension| extension.oid.to_id_string() != "1.2.3.4")
    );
    assert_eq!(
        certificate.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
    assert_eq!(
        certificate.validity().not_before.timestamp(),
        now().unix_timestamp() - 60
    );

    let identity = PeerIdentity::from_der(&der, PrincipalSource::CommonName).unwrap();
    assert_eq!(identity.principal, "alice");
    assert_eq!(identity.serial, signed.serial);
    assert_eq!(identity.not_after_unix, signed.not_after_unix);
    assert_eq!(
        signed.not_after_unix,
        (now() + Duration::days(7)).unix_timestamp()
    );
}

/// A subject of one CN; rcgen's default is "rcgen self signed cert".
fn subject_cn(name: &str) -> rcgen::DistinguishedName {
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(DnType::CommonName, name);
    subject
}

#[test]
fn generate_csr_is_signable() {
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    assert!(!format!("{request:?}").contains(&request.key_pem));
    let signed = ca
        .sign_csr(&request.csr_pem, "alice", now(), Duration::days(1))
        .unwrap();
    let certificate_key = parse(&der_of(&signed.cert_pem)).public_key().raw.to_vec();
    let key = KeyPair::from_pem(&request.key_pem).unwrap();
    assert_eq!(certificate_key, key.subject_public_key_info());
    assert!(matches!(
        generate_csr("al ice"),
        Err(PkiError::InvalidName { .. })
    ));
}

#[test]
fn sign_csr_accepts_p384_and_ed25519_keys() {
    let ca = ca();
    let algorithms: [&'static SignatureAlgorithm; 3] = [
        &PKCS_ECDSA_P256_SHA256,
        &PKCS_ECDSA_P384_SHA384,
        &PKCS_ED25519,
    ];
    for algorithm in algorithms {
        let key = KeyPair::generate_for(algorithm).unwrap();
        let csr_pem = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let signed = ca
            .sign_csr(&csr_pem, "bob", now(), Duration::days(1))
            .unwrap();
        assert_signed_by(&der_of(&signed.cert_pem), &ca);
    }
}

#[test]
fn sign_csr_refuses_a_bad_signature() {
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    let mut der = der_of(&request.csr_pem);
    // The signature is the CSR's last field; its last byte is part of S.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = ca.sign_csr(
        &pem("CERTIFICATE REQUEST", &der),
        "alice",
        now(),
        Duration::days(1),
    );
    assert!(
        matches!(tampered, Err(PkiError::CsrSignature { .. })),
        "{tampered:?}"
    );
    // The same helper round-trips the untampered CSR, so the refusal above is
    // the signature's doing.
    der[last] ^= 0x01;
    ca.sign_csr(
        &pem("CERTIFICATE REQUEST", &der),
        "alice",
        now(),
        Duration::days(1),
    )
    .unwrap();
}

#[test]
fn sign_csr_refuses_oversized_and_malformed_input() {
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    let padded = format!(
        "{}{}",
        request.csr_pem,
        " ".repeat(CSR_PEM_LEN_MAX + 1 - request.csr_pem.len())
    );
    let oversized = ca.sign_csr(&padded, "alice", now(), Duration::days(1));
    assert!(
        matches!(oversized, Err(PkiError::CsrTooLarge { length }) if length == CSR_PEM_LEN_MAX + 1),
        "{oversized:?}"
    );
    let exactly_max = &padded[..CSR_PEM_LEN_MAX];
    ca.sign_csr(exactly_max, "alice", now(), Duration::days(1))
        .unwrap();

    let mut with_trailing = der_of(&request.csr_pem);
    with_trailing.push(0);
    let certificate_pem = ca.cert_pem().to_owned();
    let malformed = [
        String::new(),
        "garbage".to_owned(),
        pem("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00"),
        pem("CERTIFICATE REQUEST", &with_trailing),
        certificate_pem,
        format!("{}{}", request.csr_pem, request.csr_pem),
    ];
    for input in malformed {
        let refused = ca.sign_csr(&input, "alice", now(), Duration::days(1));
        assert!(
            matches!(refused, Err(PkiError::CsrMalformed { .. })),
            "{input:?} gave {refused:?}"
        );
    }
    let bad_name = ca.sign_csr(&request.csr_pem, "", now(), Duration::days(1));
    assert!(
        matches!(bad_name, Err(PkiError::InvalidName { .. })),
        "{bad_name:?}"
    );
}

#[test]
fn hostile_certificates_have_their_defect() {
    let ca = ca();
    let expired = hostile::expired(&ca, "spu-1", now()).unwrap();
    let der = der_of(&expired.cert_pem);
    assert_signed_by(&der, &ca);
    let validity = parse(&der).validity().clone();
    assert_eq!(
        validity.not_before.timestamp(),
        (now() - Duration::days(2)).unix_timestamp()
    );
    assert_eq!(
        validity.not_after.timestamp(),
        (now() - Duration::days(1)).unix_timestamp()
    );
    assert_eq!(expired.not_after_unix, validity.not_after.timestamp());

    let two = hostile::with_two_common_names(&ca, "alice", "admin", now()).unwrap();
    assert_signed_by(&der_of(&two.cert_pem), &ca);
}

#[test]
fn debug_output_hides_private_keys() {
    let ca = ca();
    assert!(!format!("{ca:?}").contains(ca.key_pem()));
    let issued = ca.issue("sc", &[], &[], now(), Duration::days(1)).unwrap();
    let debug = format!("{issued:?}");
    assert!(!debug.contains(&issued.key_pem));
    assert!(debug.contains(&issued.serial));
}
