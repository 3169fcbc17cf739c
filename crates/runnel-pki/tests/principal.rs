//! `PeerIdentity::from_der` against certificates built to break one rule
//! each; every `PrincipalError` case appears here.

use proptest::prelude::*;
use rcgen::string::{BmpString, Ia5String};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType, SerialNumber,
};
use runnel_pki::{
    ClusterCa, PRINCIPAL_LEN_MAX, PeerIdentity, PrincipalError, PrincipalSource, hostile,
    validate_principal,
};
use time::{Duration, OffsetDateTime};

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap()
}

fn ca() -> ClusterCa {
    ClusterCa::generate("test", now(), Duration::days(30)).unwrap()
}

/// A self-signed certificate with exactly the given subject and SANs.
fn certificate(subject: DistinguishedName, sans: Vec<SanType>) -> Vec<u8> {
    certificate_with_serial(subject, sans, &[0x01, 0x02])
}

fn certificate_with_serial(
    subject: DistinguishedName,
    sans: Vec<SanType>,
    serial: &[u8],
) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.subject_alt_names = sans;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_after = OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap();
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

fn subject(attributes: &[(DnType, DnValue)]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for (kind, value) in attributes {
        name.push(kind.clone(), value.clone());
    }
    name
}

fn cn(value: &str) -> DistinguishedName {
    subject(&[(DnType::CommonName, DnValue::Utf8String(value.to_owned()))])
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(Ia5String::try_from(name).unwrap())
}

fn email(name: &str) -> SanType {
    SanType::Rfc822Name(Ia5String::try_from(name).unwrap())
}

fn uri(name: &str) -> SanType {
    SanType::URI(Ia5String::try_from(name).unwrap())
}

/// The one check every case goes through.
fn check(der: &[u8], source: PrincipalSource, expected: Result<&str, PrincipalError>) {
    let read = PeerIdentity::from_der(der, source).map(|identity| identity.principal);
    assert_eq!(
        read.as_deref().map_err(Clone::clone),
        expected,
        "source {source}"
    );
}

#[test]
fn common_name_cases() {
    use PrincipalError::*;
    let source = PrincipalSource::CommonName;
    check(&certificate(cn("alice"), vec![]), source, Ok("alice"));
    check(
        &certificate(cn("node-1.east_2:a@b"), vec![]),
        source,
        Ok("node-1.east_2:a@b"),
    );
    let longest = "a".repeat(PRINCIPAL_LEN_MAX);
    check(&certificate(cn(&longest), vec![]), source, Ok(&longest));
    check(
        &certificate(cn(&"a".repeat(PRINCIPAL_LEN_MAX + 1)), vec![]),
        source,
        Err(TooLong { length: 129 }),
    );
    check(&certificate(cn(""), vec![]), source, Err(Empty));
    for (name, byte, position) in [
        ("alice smith", b' ', 5),
        ("a*", b'*', 1),
        ("a\0b", 0, 1),
        ("bell\u{7}", 7, 4),
        ("al/ice", b'/', 2),
        ("é", 0xc3, 0),
    ] {
        check(
            &certificate(cn(name), vec![]),
            source,
            Err(BadCharacter { byte, position }),
        );
    }
    let organization_only = subject(&[(DnType::OrganizationName, "Acme".into())]);
    check(
        &certificate(organization_only, vec![dns("alice")]),
        source,
        Err(CommonNameCount { count: 0 }),
    );
}

#[test]
fn common_name_string_types() {
    let source = PrincipalSource::CommonName;
    let printable = DnValue::PrintableString("alice".try_into().unwrap());
    let ia5 = DnValue::Ia5String("alice".try_into().unwrap());
    let bmp = DnValue::BmpString(BmpString::try_from("alice").unwrap());
    for accepted in [printable, ia5] {
        let der = certificate(subject(&[(DnType::CommonName, accepted)]), vec![]);
        check(&der, source, Ok("alice"));
    }
    let der = certificate(subject(&[(DnType::CommonName, bmp)]), vec![]);
    check(
        &der,
        source,
        Err(PrincipalError::CommonNameEncoding { tag: 30 }),
    );
}

#[test]
fn two_common_names_are_refused() {
    let issued = hostile::with_two_common_names(&ca(), "alice", "admin", now()).unwrap();
    let der = pem_contents(&issued.cert_pem);
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let names: Vec<&str> = parsed
        .subject()
        .iter_common_name()
        .map(|name| name.as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "admin"]);
    check(
        &der,
        PrincipalSource::CommonName,
        Err(PrincipalError::CommonNameCount { count: 2 }),
    );
}

#[test]
fn malformed_der_is_refused() {
    let mut der = certificate(cn("alice"), vec![]);
    der.extend_from_slice(&[0, 0, 0]);
    for source in SOURCES {
        check(
            &der,
            source,
            Err(PrincipalError::TrailingBytes { count: 3 }),
        );
    }
    for garbage in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", b"hello, world"] {
        let read = PeerIdentity::from_der(garbage, PrincipalSource::CommonName);
        assert!(
            matches!(read, Err(PrincipalError::Malformed { .. })),
            "{garbage:?} gave {read:?}"
        );
    }
    let mut truncated = certificate(cn("alice"), vec![]);
    truncated.truncate(truncated.len() - 1);
    assert!(matches!(
        PeerIdentity::from_der(&truncated, PrincipalSource::CommonName),
        Err(PrincipalError::Malformed { .. })
    ));
}

const SOURCES: [PrincipalSource; 4] = [
    PrincipalSource::CommonName,
    PrincipalSource::SanDns,
    PrincipalSource::SanEmail,
    PrincipalSource::SanUri,
];

#[test]
fn san_sources_need_exactly_one_san_of_their_kind() {
    use PrincipalSource::*;
    // Each certificate holds one SAN of one kind and the others of none.
    let mixed = vec![
        dns("node-1.example.com"),
        email("alice@example.com"),
        uri("urn:runnel:alice"),
        SanType::IpAddress("10.0.0.1".parse().unwrap()),
    ];
    let der = certificate(cn("cn-name"), mixed);
    check(&der, SanDns, Ok("node-1.example.com"));
    check(&der, SanEmail, Ok("alice@example.com"));
    check(&der, SanUri, Ok("urn:runnel:alice"));
    check(&der, CommonName, Ok("cn-name"));

    let none = certificate(cn("alice"), vec![]);
    let two = certificate(
        cn("alice"),
        vec![
            dns("a.example"),
            dns("b.example"),
            email("a@example"),
            email("b@example"),
            uri("urn:a"),
            uri("urn:b"),
        ],
    );
    for kind in [SanDns, SanEmail, SanUri] {
        check(
            &none,
            kind,
            Err(PrincipalError::SanCount { kind, count: 0 }),
        );
        check(&two, kind, Err(PrincipalError::SanCount { kind, count: 2 }));
    }
    let spaced = certificate(cn("alice"), vec![uri("urn:a b")]);
    check(
        &spaced,
        SanUri,
        Err(PrincipalError::BadCharacter {
            byte: b' ',
            position: 5,
        }),
    );
    let wildcard = certificate(cn("alice"), vec![dns("*.example")]);
    check(
        &wildcard,
        SanDns,
        Err(PrincipalError::BadCharacter {
            byte: b'*',
            position: 0,
        }),
    );
}

#[test]
fn serial_must_be_positive_and_short() {
    let source = PrincipalSource::CommonName;
    let zero = certificate_with_serial(cn("alice"), vec![], &[0]);
    check(&zero, source, Err(PrincipalError::SerialNotPositive));
    // rcgen writes only positive serials; turn the zero serial into -1 by
    // hand. The signature no longer matches, which `from_der` does not check.
    let negative = replace_once(&zero, &[0x02, 0x01, 0x00], &[0x02, 0x01, 0xff]);
    check(&negative, source, Err(PrincipalError::SerialNotPositive));
    let long = certificate_with_serial(cn("alice"), vec![], &[0x11; 21]);
    check(
        &long,
        source,
        Err(PrincipalError::SerialTooLong { length: 21 }),
    );
    // A high first byte gets a 0x00 sign byte in DER, which the key drops.
    let high = certificate_with_serial(cn("alice"), vec![], &[0x80, 0x01]);
    let identity = PeerIdentity::from_der(&high, source).unwrap();
    assert_eq!(identity.serial, "8001");
}

#[test]
fn principal_source_names_round_trip() {
    for source in SOURCES {
        assert_eq!(source.to_string().parse::<PrincipalSource>(), Ok(source));
    }
    assert_eq!(PrincipalSource::default(), PrincipalSource::CommonName);
    let error = "CN".parse::<PrincipalSource>().unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown principal source \"CN\"; use one of cn, san-dns, san-email, san-uri"
    );
}

#[test]
fn error_texts_say_what_is_wrong() {
    assert_eq!(
        PrincipalError::CommonNameCount { count: 2 }.to_string(),
        "the certificate's subject holds 2 common names; exactly one is required"
    );
    assert_eq!(
        PrincipalError::BadCharacter {
            byte: b' ',
            position: 5
        }
        .to_string(),
        "the certificate's principal holds the byte 0x20 at position 5; only letters, digits and . _ @ : - are allowed"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The CA issues a certificate exactly when the name obeys the
    /// principal rule, and then peers read the same name back.
    #[test]
    fn issue_agrees_with_from_der(name in "[A-Za-z0-9._@:* \\-]{0,130}") {
        let ca = ca();
        let issued = ca.issue(&name, &[], &[], now(), Duration::days(1));
        prop_assert_eq!(issued.is_ok(), validate_principal(&name).is_ok());
        if let Ok(issued) = issued {
            let der = pem_contents(&issued.cert_pem);
            let identity = PeerIdentity::from_der(&der, PrincipalSource::CommonName).unwrap();
            prop_assert_eq!(identity.principal, name);
        }
    }
}

fn replace_once(haystack: &[u8], needle: &[u8], replacement: &[u8]) -> Vec<u8> {
    let at = haystack
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("pattern present");
    let mut out = haystack.to_vec();
    out[at..at + needle.len()].copy_from_slice(replacement);
    out
}

fn pem_contents(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}
