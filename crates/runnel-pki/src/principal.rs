//! The identity a certificate names: its principal, read strictly from the
//! DER a peer presented, and the serial number revocation keys on.
//!
//! This module reads; it does not verify. The TLS layer has already checked
//! the chain to the cluster CA, the validity period and the signature before
//! anyone asks who the peer is.

use std::fmt;
use std::str::FromStr;

use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// Longest principal accepted, in bytes. Principals end up in logs, ACL
/// rules and revocation lists; a bound keeps all of them small.
pub const PRINCIPAL_LEN_MAX: usize = 128;

/// Longest serial number accepted, in bytes without the sign byte. RFC 5280
/// §4.1.2.2 caps conforming serials at 20 octets; the bound also keeps the
/// revocation key short.
pub const SERIAL_LEN_MAX: usize = 20;

/// Where a certificate's principal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrincipalSource {
    /// The single common name (CN) of the subject.
    #[default]
    CommonName,
    /// The single DNS name in the subject alternative names.
    SanDns,
    /// The single e-mail address (rfc822Name) in the subject alternative names.
    SanEmail,
    /// The single URI in the subject alternative names.
    SanUri,
}

impl PrincipalSource {
    /// The name used in configuration files and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalSource::CommonName => "cn",
            PrincipalSource::SanDns => "san-dns",
            PrincipalSource::SanEmail => "san-email",
            PrincipalSource::SanUri => "san-uri",
        }
    }
}

impl fmt::Display for PrincipalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A principal source name that is none of the four known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown principal source {given:?}; use one of cn, san-dns, san-email, san-uri")]
pub struct ParsePrincipalSourceError {
    /// What was given.
    pub given: String,
}

impl FromStr for PrincipalSource {
    type Err = ParsePrincipalSourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cn" => Ok(PrincipalSource::CommonName),
            "san-dns" => Ok(PrincipalSource::SanDns),
            "san-email" => Ok(PrincipalSource::SanEmail),
            "san-uri" => Ok(PrincipalSource::SanUri),
            _ => Err(ParsePrincipalSourceError {
                given: text.to_owned(),
            }),
        }
    }
}

/// Why a certificate names no usable principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// The bytes are not a DER X.509 certificate.
    #[error(
        "the certificate is not valid DER X.509 ({reason}); present a certificate issued by the cluster CA"
    )]
    Malformed {
        /// What the parser reported.
        reason: String,
    },
    /// A certificate parsed, but more bytes follow it.
    #[error(
        "{count} bytes follow the certificate's DER; a certificate must be exactly one DER value"
    )]
    TrailingBytes {
        /// How many bytes follow.
        count: usize,
    },
    /// The subject does not hold exactly one common name.
    #[error("the certificate's subject holds {count} common names; exactly one is required")]
    CommonNameCount {
        /// How many CN attributes the subject holds.
        count: usize,
    },
    /// The common name uses a string type other than the three accepted.
    #[error(
        "the certificate's common name is encoded with ASN.1 tag {tag}; only UTF8String, PrintableString and IA5String are accepted"
    )]
    CommonNameEncoding {
        /// The ASN.1 tag number of the value.
        tag: u32,
    },
    /// The subject alternative names extension is unreadable or present twice.
    #[error("the certificate's subject alternative names cannot be read ({reason})")]
    SubjectAltNames {
        /// What the parser reported.
        reason: String,
    },
    /// The certificate does not hold exactly one SAN of the configured kind.
    #[error(
        "the certificate holds {count} {kind} subject alternative names; exactly one is required"
    )]
    SanCount {
        /// The configured source.
        kind: PrincipalSource,
        /// How many SANs of that kind it holds.
        count: usize,
    },
    /// The principal is the empty string.
    #[error("the certificate's principal is empty")]
    Empty,
    /// The principal is longer than [`PRINCIPAL_LEN_MAX`].
    #[error(
        "the certificate's principal is {length} bytes long; at most {PRINCIPAL_LEN_MAX} are allowed"
    )]
    TooLong {
        /// Its length in bytes.
        length: usize,
    },
    /// The principal holds a byte outside `[A-Za-z0-9._@:-]`.
    #[error(
        "the certificate's principal holds the byte {byte:#04x} at position {position}; only letters, digits and . _ @ : - are allowed"
    )]
    BadCharacter {
        /// The offending byte.
        byte: u8,
        /// Its offset in the principal.
        position: usize,
    },
    /// The serial number is zero or negative, which RFC 5280 forbids.
    #[error(
        "the certificate's serial number is zero or negative; RFC 5280 requires a positive serial"
    )]
    SerialNotPositive,
    /// The serial number is longer than [`SERIAL_LEN_MAX`] bytes.
    #[error(
        "the certificate's serial number is {length} bytes long; at most {SERIAL_LEN_MAX} are allowed"
    )]
    SerialTooLong {
        /// Its length in bytes, without leading zero bytes.
        length: usize,
    },
}

/// Who presented a certificate, read from its DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The name authorization rules refer to.
    pub principal: String,
    /// Lower-case hex of the serial number without leading zero bytes — the revocation key.
    pub serial: String,
    /// End of the validity period, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl PeerIdentity {
    /// Reads the identity from a certificate's DER.
    ///
    /// Strict, because the answer decides what a peer may do: the DER must
    /// parse completely (no trailing bytes); with [`PrincipalSource::CommonName`]
    /// the subject must hold exactly one CN attribute, a UTF8String,
    /// PrintableString or IA5String; with a SAN source the certificate must
    /// hold exactly one SAN of that kind. Either way the principal is
    /// 1..=128 bytes of `[A-Za-z0-9._@:-]`, so it can never smuggle a
    /// wildcard, a space or a control character into rules and logs.
    pub fn from_der(der: &[u8], source: PrincipalSource) -> Result<PeerIdentity, PrincipalError> {
        let certificate = parse_certificate(der)?;
        let principal = match source {
            PrincipalSource::CommonName => common_name(&certificate)?,
            // Context-specific tags of the GeneralName kinds (RFC 5280 §4.2.1.6).
            PrincipalSource::SanEmail => subject_alt_name(&certificate, source, Tag(1))?,
            PrincipalSource::SanDns => subject_alt_name(&certificate, source, Tag(2))?,
            PrincipalSource::SanUri => subject_alt_name(&certificate, source, Tag(6))?,
        };
        Ok(PeerIdentity {
            principal: principal.to_owned(),
            serial: serial(&certificate)?,
            not_after_unix: certificate.validity().not_after.timestamp(),
        })
    }

    /// Reads the identity from a certificate file's first PEM block, as
    /// servers read it from the DER they are presented.
    pub fn from_pem(pem: &[u8], source: PrincipalSource) -> Result<PeerIdentity, String> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|error| format!("it holds no PEM certificate ({error})"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "its first PEM block is a {}, not a CERTIFICATE",
                block.label
            ));
        }
        PeerIdentity::from_der(&block.contents, source).map_err(|error| error.to_string())
    }
}

/// The DER of each CERTIFICATE block of `pem` (other blocks skipped), or
/// `None` if a block cannot be decoded.
pub fn certificate_ders(pem: &[u8]) -> Option<Vec<Vec<u8>>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter(|block| {
            !block
                .as_ref()
                .is_ok_and(|block| block.label != "CERTIFICATE")
        })
        .map(|block| block.ok().map(|block| block.contents))
        .collect()
}

/// Checks `name` against the principal rule: 1..=128 bytes of
/// `[A-Za-z0-9._@:-]`. The CA applies it before issuing, so it never signs
/// a certificate that [`PeerIdentity::from_der`] would refuse.
pub fn validate_principal(name: &str) -> Result<(), PrincipalError> {
    validate_principal_bytes(name.as_bytes()).map(|_| ())
}

/// The rule on raw bytes, as certificates carry them; returns them as text.
/// Every allowed byte is ASCII, so valid input is always valid UTF-8.
fn validate_principal_bytes(bytes: &[u8]) -> Result<&str, PrincipalError> {
    if bytes.is_empty() {
        return Err(PrincipalError::Empty);
    }
    if bytes.len() > PRINCIPAL_LEN_MAX {
        return Err(PrincipalError::TooLong {
            length: bytes.len(),
        });
    }
    if let Some(position) = bytes.iter().position(|&byte| !is_principal_byte(byte)) {
        return Err(PrincipalError::BadCharacter {
            byte: bytes[position],
            position,
        });
    }
    Ok(std::str::from_utf8(bytes).expect("principal bytes are ASCII"))
}

fn is_principal_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'@' | b':' | b'-')
}

/// Parses one certificate that must span all of `der`.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, PrincipalError> {
    let (rest, certificate) =
        X509Certificate::from_der(der).map_err(|error| PrincipalError::Malformed {
            reason: error.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(PrincipalError::TrailingBytes { count: rest.len() });
    }
    Ok(certificate)
}

/// The serial number in revocation-key form: lower-case hex of its
/// magnitude, leading zero bytes stripped, never empty.
pub(crate) fn serial(certificate: &X509Certificate<'_>) -> Result<String, PrincipalError> {
    let raw = certificate.raw_serial();
    if raw.first().is_some_and(|&first| first & 0x80 != 0) {
        return Err(PrincipalError::SerialNotPositive);
    }
    let start = raw.iter().position(|&byte| byte != 0);
    let Some(start) = start else {
        return Err(PrincipalError::SerialNotPositive);
    };
    let magnitude = &raw[start..];
    if magnitude.len() > SERIAL_LEN_MAX {
        return Err(PrincipalError::SerialTooLong {
            length: magnitude.len(),
        });
    }
    Ok(magnitude.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn common_name<'a>(certificate: &'a X509Certificate<'_>) -> Result<&'a str, PrincipalError> {
    let mut names = certificate.subject().iter_common_name();
    let (Some(name), None) = (names.next(), names.next()) else {
        return Err(PrincipalError::CommonNameCount {
            count: certificate.subject().iter_common_name().count(),
        });
    };
    let value = name.attr_value();
    let tag = value.tag();
    if !matches!(tag, Tag::Utf8String | Tag::PrintableString | Tag::Ia5String)
        || value.header.is_constructed()
    {
        return Err(PrincipalError::CommonNameEncoding { tag: tag.0 });
    }
    validate_principal_bytes(value.data)
}

fn subject_alt_name<'a>(
    certificate: &'a X509Certificate<'_>,
    source: PrincipalSource,
    tag: Tag,
) -> Result<&'a str, PrincipalError> {
    let extension = certificate.subject_alternative_name().map_err(|error| {
        PrincipalError::SubjectAltNames {
            reason: error.to_string(),
        }
    })?;
    let names = extension
        .map(|extension| extension.value.general_names.as_slice())
        .unwrap_or_default();
    // An entry of the right kind that x509-parser could not decode (bad
    // UTF-8) still counts, and then fails the character rule.
    let matching: Vec<&[u8]> = names
        .iter()
        .filter_map(|name| match (source, name) {
            (PrincipalSource::SanDns, GeneralName::DNSName(text))
            | (PrincipalSource::SanEmail, GeneralName::RFC822Name(text))
            | (PrincipalSource::SanUri, GeneralName::URI(text)) => Some(text.as_bytes()),
            (_, GeneralName::Invalid(invalid_tag, bytes)) if *invalid_tag == tag => Some(*bytes),
            _ => None,
        })
        .collect();
    let [only] = matching.as_slice() else {
        return Err(PrincipalError::SanCount {
            kind: source,
            count: matching.len(),
        });
    };
    validate_principal_bytes(only)
}
