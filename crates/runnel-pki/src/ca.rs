//! The cluster CA and what it signs: certificates for key pairs generated
//! here (nodes, the admin), certificates for CSRs received at login (users,
//! whose keys never leave their machines), and the CSR `runnel login` sends.

use std::fmt;
use std::net::IpAddr;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime, UtcOffset};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::principal::{PrincipalError, parse_certificate, serial, validate_principal};

/// Largest CSR [`ClusterCa::sign_csr`] reads, in bytes of PEM. A P-384 CSR
/// with a long name is under 1 KiB; the bound stops a peer from making the
/// SC decode and verify megabytes before it refuses them.
pub const CSR_PEM_LEN_MAX: usize = 16 * 1024;

/// How far before `now` certificates become valid, so that a node whose
/// clock is slightly behind the CA's accepts a certificate issued just now.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::minutes(1);

/// Serial numbers are this many random bytes (RFC 5280 allows up to 20).
const SERIAL_LEN: usize = 16;

/// What went wrong creating, loading or using the cluster CA.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A name the CA was asked to certify breaks the principal rule.
    #[error("the {what} {name:?} cannot be used: {source}")]
    InvalidName {
        /// Which name: "common name" or "cluster name".
        what: &'static str,
        /// The name given.
        name: String,
        /// Which rule it breaks.
        source: PrincipalError,
    },
    /// A DNS name cannot go in a certificate.
    #[error("the DNS name {name:?} cannot go in a certificate: {reason}")]
    InvalidDnsName {
        /// The name given.
        name: String,
        /// Why not.
        reason: String,
    },
    /// The lifetime is zero or negative.
    #[error(
        "the certificate lifetime {lifetime} is not positive; give a lifetime such as 365 days"
    )]
    NonPositiveLifetime {
        /// The lifetime given.
        lifetime: Duration,
    },
    /// The validity period falls outside what X.509 dates can express.
    #[error(
        "the validity period does not fit X.509 dates (years 0 to 9999); check the clock and use a shorter lifetime"
    )]
    ValidityOutOfRange,
    /// The CA certificate PEM is not one PEM block labelled CERTIFICATE.
    #[error(
        "the CA certificate is not PEM: {reason}; pass the ca.crt written by `runnel cluster start --tls`"
    )]
    CaCertificatePem {
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificate is not a readable X.509 certificate.
    #[error("the CA certificate cannot be read: {source}")]
    CaCertificate {
        /// What is wrong with it.
        source: PrincipalError,
    },
    /// The CA certificate's basic constraints do not make it a CA.
    #[error(
        "the CA certificate is not a CA certificate (its basic constraints do not allow signing); pass the ca.crt written by `runnel cluster start --tls`"
    )]
    NotCa,
    /// The CA key PEM is not a readable private key.
    #[error(
        "the CA key cannot be read: {reason}; pass the ca.key written by `runnel cluster start --tls`"
    )]
    CaKey {
        /// What the key parser reported.
        reason: String,
    },
    /// The CA key is not the key of the CA certificate.
    #[error(
        "the CA key does not belong to the CA certificate; pass the ca.key written together with this ca.crt"
    )]
    KeyMismatch,
    /// The CSR is longer than [`CSR_PEM_LEN_MAX`].
    #[error("the CSR is {length} bytes long; at most {CSR_PEM_LEN_MAX} are accepted")]
    CsrTooLarge {
        /// Its length in bytes.
        length: usize,
    },
    /// The CSR is not one PEM "CERTIFICATE REQUEST" holding a PKCS #10 request.
    #[error(
        "the CSR cannot be read ({reason}); send the PEM CERTIFICATE REQUEST that `runnel login` creates"
    )]
    CsrMalformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The CSR's key is of a kind the cluster does not accept.
    #[error(
        "the CSR's key is {algorithm}; only ECDSA P-256, ECDSA P-384 and Ed25519 keys are accepted"
    )]
    CsrKeyAlgorithm {
        /// The key's algorithm, as an OID when it is not a known one.
        algorithm: String,
    },
    /// The CSR's signature does not verify with its own key.
    #[error(
        "the CSR's signature does not verify with its own public key ({reason}), so it does not prove possession of the key; create a new CSR"
    )]
    CsrSignature {
        /// What the verifier reported.
        reason: String,
    },
    /// Key generation, signing or the random source failed.
    #[error("could not {action}: {reason}")]
    Crypto {
        /// What was being done.
        action: &'static str,
        /// What failed.
        reason: String,
    },
    /// A certificate just signed here does not read back.
    #[error(
        "the certificate just issued cannot be read back ({source}); this is a bug in runnel-pki"
    )]
    ReadBack {
        /// What the reader reported.
        source: PrincipalError,
    },
}

/// A cluster CA: its certificate and key (PEM).
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
    /// The last second the CA certificate is valid.
    not_after_unix: i64,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A certificate and the key pair generated for it.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS #8 PEM; the caller writes it with mode 0600.
    pub key_pem: String,
    /// The revocation key, as [`crate::PeerIdentity::serial`] reads it.
    pub serial: String,
    /// End of validity, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .field("serial", &self.serial)
            .field("not_after_unix", &self.not_after_unix)
            .finish()
    }
}

/// A certificate signed for a key held elsewhere (a user's, from a CSR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The revocation key, as [`crate::PeerIdentity::serial`] reads it.
    pub serial: String,
    /// End of validity, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// A new key pair and a CSR for it.
#[derive(Clone)]
pub struct KeyAndCsr {
    /// The private key, PKCS #8 PEM; it stays on the machine that made it.
    pub key_pem: String,
    /// The CSR, PEM, to send to the SC.
    pub csr_pem: String,
}

impl fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("key_pem", &"[redacted]")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// What a leaf certificate says, apart from its key, serial and issuer.
pub(crate) struct LeafSubject {
    pub(crate) distinguished_name: DistinguishedName,
    pub(crate) subject_alt_names: Vec<SanType>,
    pub(crate) extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

impl ClusterCa {
    /// A new self-signed CA (ECDSA P-256), CN "<cluster_name> Runnel CA",
    /// valid from one minute before `now` (clock skew) to `now + lifetime`.
    /// It may sign only leaf certificates (path length 0).
    pub fn generate(
        cluster_name: &str,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<ClusterCa, PkiError> {
        validate_principal(cluster_name).map_err(|source| PkiError::InvalidName {
            what: "cluster name",
            name: cluster_name.to_owned(),
            source,
        })?;
        let (not_before, not_after) = validity(now, lifetime)?;
        let key = generate_key("generate the CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(format!("{cluster_name} Runnel CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        params.not_before = not_before;
        params.not_after = not_after;
        let certificate = params
            .self_signed(&key)
            .map_err(crypto("sign the CA certificate"))?;
        // Through `from_pem`, so a generated CA passes the same checks as a
        // loaded one.
        ClusterCa::from_pem(&certificate.pem(), &key.serialize_pem())
    }

    /// Loads a CA written earlier, checking that the certificate is a CA
    /// certificate and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, PkiError> {
        let cert_der = decode_pem(cert_pem, "CERTIFICATE")
            .map_err(|reason| PkiError::CaCertificatePem { reason })?;
        let certificate =
            parse_certificate(&cert_der).map_err(|source| PkiError::CaCertificate { source })?;
        if !certificate.is_ca() {
            return Err(PkiError::NotCa);
        }
        let key = KeyPair::from_pem(key_pem).map_err(|error| PkiError::CaKey {
            reason: error.to_string(),
        })?;
        if certificate.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::KeyMismatch);
        }
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(crypto("read the CA certificate"))?;
        let not_after_unix = certificate.validity().not_after.timestamp();
        Ok(ClusterCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            cert_der,
            not_after_unix,
            issuer,
        })
    }

    /// The CA certificate, PEM: what every node and client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER, for trust stores that take DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The last second the CA certificate is valid, as Unix time.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after_unix
    }

    /// The CA key, PEM, for writing ca.key with mode 0600 by the caller.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate for a new key pair (ECDSA P-256) generated here,
    /// for nodes and the admin: CN = `common_name`, SANs = `dns_names` and
    /// `ip_addrs`, EKU serverAuth and clientAuth (nodes both serve and dial),
    /// a random positive 16-byte serial, valid from `now` - 1 min to
    /// `now + lifetime`.
    pub fn issue(
        &self,
        common_name: &str,
        dns_names: &[String],
        ip_addrs: &[IpAddr],
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<IssuedCert, PkiError> {
        check_common_name(common_name)?;
        let mut subject_alt_names = Vec::with_capacity(dns_names.len() + ip_addrs.len());
        for name in dns_names {
            subject_alt_names.push(dns_san(name)?);
        }
        subject_alt_names.extend(ip_addrs.iter().copied().map(SanType::IpAddress));
        let (not_before, not_after) = validity(now, lifetime)?;
        let subject = LeafSubject {
            distinguished_name: common_name_only(common_name.to_owned()),
            subject_alt_names,
            extended_key_usages: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            not_before,
            not_after,
        };
        self.issue_for_new_key(subject)
    }

    /// Signs a CSR received over the network for a user who logged in.
    ///
    /// Strict and bounded, since anyone who can log in controls the input:
    /// CSRs over [`CSR_PEM_LEN_MAX`] bytes, that do not parse completely,
    /// whose key is not ECDSA P-256/P-384 or Ed25519, or whose signature does
    /// not verify (proof of key possession) are refused. The certificate
    /// takes nothing from the CSR but its public key: CN = `common_name` (the
    /// authenticated user name), no SANs, EKU clientAuth only, not a CA, a
    /// random serial, valid from `now` - 1 min to `now + lifetime`.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        common_name: &str,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<SignedCert, PkiError> {
        if csr_pem.len() > CSR_PEM_LEN_MAX {
            return Err(PkiError::CsrTooLarge {
                length: csr_pem.len(),
            });
        }
        check_common_name(common_name)?;
        let (not_before, not_after) = validity(now, lifetime)?;
        let public_key = verified_csr_key(csr_pem)?;
        let subject = LeafSubject {
            distinguished_name: common_name_only(common_name.to_owned()),
            subject_alt_names: Vec::new(),
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            not_before,
            not_after,
        };
        self.sign_leaf(subject, &public_key)
    }

    /// Generates a P-256 key pair and signs a leaf certificate for it.
    pub(crate) fn issue_for_new_key(&self, subject: LeafSubject) -> Result<IssuedCert, PkiError> {
        let key = generate_key("generate a key pair")?;
        let signed = self.sign_leaf(subject, &key)?;
        Ok(IssuedCert {
            cert_pem: signed.cert_pem,
            key_pem: key.serialize_pem(),
            serial: signed.serial,
            not_after_unix: signed.not_after_unix,
        })
    }

    /// Signs a leaf (non-CA) certificate, then reads serial and expiry back
    /// from the DER with the code peers use, so both agree by construction.
    fn sign_leaf(
        &self,
        subject: LeafSubject,
        public_key: &impl PublicKeyData,
    ) -> Result<SignedCert, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject.distinguished_name;
        params.subject_alt_names = subject.subject_alt_names;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = subject.extended_key_usages;
        params.serial_number = Some(random_serial()?);
        params.not_before = subject.not_before;
        params.not_after = subject.not_after;
        params.use_authority_key_identifier_extension = true;
        let certificate = params
            .signed_by(public_key, &self.issuer)
            .map_err(crypto("sign the certificate"))?;
        let parsed =
            parse_certificate(certificate.der()).map_err(|source| PkiError::ReadBack { source })?;
        Ok(SignedCert {
            cert_pem: certificate.pem(),
            serial: serial(&parsed).map_err(|source| PkiError::ReadBack { source })?,
            not_after_unix: parsed.validity().not_after.timestamp(),
        })
    }
}

/// A new key pair (ECDSA P-256) and a CSR for it with CN = `common_name` —
/// what `runnel login` sends. The CA ignores the CN it asks for; it is there
/// so the CSR reads sensibly to a human.
pub fn generate_csr(common_name: &str) -> Result<KeyAndCsr, PkiError> {
    check_common_name(common_name)?;
    let key = generate_key("generate a key pair")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_only(common_name.to_owned());
    let csr = params
        .serialize_request(&key)
        .map_err(crypto("sign the CSR"))?;
    let csr_pem = csr.pem().map_err(crypto("encode the CSR as PEM"))?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}

/// Parses a CSR completely, checks its key kind, verifies its signature and
/// returns its public key. Everything else in it is ignored.
fn verified_csr_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, PkiError> {
    let der = decode_pem(csr_pem, "CERTIFICATE REQUEST")
        .map_err(|reason| PkiError::CsrMalformed { reason })?;
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|error| PkiError::CsrMalformed {
            reason: error.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(PkiError::CsrMalformed {
            reason: format!("{} bytes follow the request's DER", rest.len()),
        });
    }
    let spki = &csr.certification_request_info.subject_pki;
    let unsupported = || PkiError::CsrKeyAlgorithm {
        algorithm: key_algorithm_name(spki),
    };
    let public_key = SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| unsupported())?;
    let algorithm = public_key.algorithm();
    if ![
        &PKCS_ECDSA_P256_SHA256,
        &PKCS_ECDSA_P384_SHA384,
        &PKCS_ED25519,
    ]
    .contains(&algorithm)
    {
        return Err(unsupported());
    }
    csr.verify_signature()
        .map_err(|error| PkiError::CsrSignature {
            reason: error.to_string(),
        })?;
    Ok(public_key)
}

/// The key algorithm OID, with the curve OID for elliptic-curve keys.
fn key_algorithm_name(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> String {
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|parameters| parameters.as_oid().ok())
    {
        Some(curve) => format!(
            "algorithm {algorithm} with parameters {}",
            curve.to_id_string()
        ),
        None => format!("algorithm {algorithm}"),
    }
}

/// Decodes the one PEM block in `text`, which must carry `label`; only
/// whitespace may follow it.
fn decode_pem(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let (rest, pem) =
        x509_parser::pem::parse_x509_pem(text.as_bytes()).map_err(|error| error.to_string())?;
    if pem.label != label {
        return Err(format!(
            "the PEM block is labelled {:?}, not {label:?}",
            pem.label
        ));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err("more data follows the PEM block".to_owned());
    }
    Ok(pem.contents)
}

fn check_common_name(common_name: &str) -> Result<(), PkiError> {
    validate_principal(common_name).map_err(|source| PkiError::InvalidName {
        what: "common name",
        name: common_name.to_owned(),
        source,
    })
}

fn dns_san(name: &str) -> Result<SanType, PkiError> {
    let invalid = |reason: String| PkiError::InvalidDnsName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    let ascii = Ia5String::try_from(name).map_err(|error| invalid(error.to_string()))?;
    Ok(SanType::DnsName(ascii))
}

pub(crate) fn common_name_only(common_name: String) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// From `now` - [`CLOCK_SKEW_ALLOWANCE`] to `now + lifetime`.
fn validity(
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    if !lifetime.is_positive() {
        return Err(PkiError::NonPositiveLifetime { lifetime });
    }
    let now = now.to_offset(UtcOffset::UTC);
    validity_window(
        now.checked_sub(CLOCK_SKEW_ALLOWANCE),
        now.checked_add(lifetime),
    )
}

/// Checks that both ends exist and are years X.509 can write; rcgen's
/// encoder panics on years past 9999.
pub(crate) fn validity_window(
    not_before: Option<OffsetDateTime>,
    not_after: Option<OffsetDateTime>,
) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let writable = |date: OffsetDateTime| (0..=9999).contains(&date.year());
    match (not_before, not_after) {
        (Some(from), Some(until)) if writable(from) && writable(until) => Ok((from, until)),
        _ => Err(PkiError::ValidityOutOfRange),
    }
}

/// A fresh random serial: 16 bytes, top bit clear so the INTEGER is
/// positive with no sign byte, next bit set so it is always 16 bytes long.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; SERIAL_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Crypto {
            action: "draw a random serial number",
            reason: "the system random source failed".to_owned(),
        })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn generate_key(action: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto(action))
}

fn crypto(action: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |error| PkiError::Crypto {
        action,
        reason: error.to_string(),
    }
}
