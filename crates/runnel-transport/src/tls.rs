//! TLS 1.3 for every listener and every connection, with rustls.
//!
//! Both sides present certificates signed by the cluster CA. A server
//! checks the client's chain, validity and extended key usage (webpki),
//! then the parts webpki does not know: the certificate must name exactly
//! one principal ([`PeerIdentity::from_der`]), its serial must not be
//! revoked, and a private listener admits node identities only. A refused
//! certificate ends the handshake with an alert that says why
//! (`certificate_revoked`, `access_denied`, ...), which the client turns
//! into a readable error ([`refusal`]). Clients check the server's
//! certificate against the CA and the name they dialled.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runnel_api::{ApiError, ErrorCode};
use runnel_pki::{PeerIdentity, PrincipalSource};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::net::TcpStream;
use tracing::warn;

use crate::io::{ByteStream, FrameWrite};

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("the TLS configuration was refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the CA certificates cannot verify clients: {0}")]
    Verifier(String),
    #[error("`{0}` is not a valid server name to verify (a DNS name or an IP address)")]
    ServerName(String),
}

/// Serial numbers of revoked certificates, shared between a server's
/// certificate verifier (new connections) and its request handlers
/// (connections made before the revocation).
#[derive(Debug, Clone, Default)]
pub struct Revocations(Arc<RwLock<HashSet<String>>>);

impl Revocations {
    pub fn contains(&self, serial: &str) -> bool {
        self.0.read().expect("revocations lock").contains(serial)
    }

    /// Replaces the whole list (the SC sends it whole).
    pub fn replace(&self, serials: impl IntoIterator<Item = String>) {
        *self.0.write().expect("revocations lock") = serials.into_iter().collect();
    }

    /// The identity of a request's connection if its certificate is still
    /// good at `now_unix`: present, not revoked, not expired. The handshake
    /// checked all three, but a connection outlives the last two, so the SC
    /// and the SPUs ask again on every request, with the same answers.
    pub fn authenticate<'a>(
        &self,
        identity: Option<&'a PeerIdentity>,
        now_unix: i64,
    ) -> Result<&'a PeerIdentity, ApiError> {
        let Some(identity) = identity else {
            return Err(certificate_required());
        };
        if self.contains(&identity.serial) {
            warn!(principal = %identity.principal, serial = %identity.serial, "request refused: certificate revoked");
            return Err(ApiError::new(
                ErrorCode::AUTHENTICATION_FAILED,
                format!(
                    "the certificate {serial} of {principal} has been revoked; get a new one \
                     with `runnel login`, or ask an admin",
                    serial = identity.serial,
                    principal = identity.principal,
                ),
            ));
        }
        if identity.not_after_unix < now_unix {
            warn!(principal = %identity.principal, serial = %identity.serial, not_after_unix = identity.not_after_unix, "request refused: certificate expired");
            return Err(ApiError::new(
                ErrorCode::AUTHENTICATION_FAILED,
                format!(
                    "the certificate naming {principal} expired at {not_after}; get a new one \
                     with `runnel login`",
                    principal = identity.principal,
                    not_after = runnel_pki::utc_text(identity.not_after_unix),
                ),
            ));
        }
        Ok(identity)
    }
}

/// When [`Revocations::authenticate`] starts refusing `identity` for
/// expiry: the second after its last valid one. `None` when that is
/// beyond any timer.
pub fn expiry_deadline(identity: &PeerIdentity) -> Option<tokio::time::Instant> {
    let refused_from = identity.not_after_unix.checked_add(1)?;
    let refused_from = UNIX_EPOCH + Duration::from_secs(u64::try_from(refused_from).unwrap_or(0));
    let remaining = refused_from
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::Instant::now().checked_add(remaining)
}

/// The answer to a request that needs a client certificate, on a
/// connection without one.
pub fn certificate_required() -> ApiError {
    ApiError::new(
        ErrorCode::AUTHENTICATION_REQUIRED,
        "this request needs a client certificate: run `runnel login` or set the profile's \
         certificate and key",
    )
}

/// Who a listener admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Any principal with a certificate from the CA; a connection without
    /// one is refused.
    Clients,
    /// Like `Clients`, but a connection without a certificate is admitted
    /// too, unauthenticated: the SC's public listener, where `runnel
    /// login` obtains a first certificate. Its handler refuses such a
    /// connection everything else.
    ClientsOrAnonymous,
    /// Node identities only (`sc`, `spu:<id>`): private listeners.
    Nodes,
}

/// A cluster node's TLS material (the SC's or an SPU's), read from its
/// files: the CA, the node's certificate (naming `sc` or `spu:<id>`) and
/// key. A node serves its listeners and connects to other nodes with it.
#[derive(Clone)]
pub struct NodeTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Where client certificates name their principal.
    pub principal_source: PrincipalSource,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("principal_source", &self.principal_source)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Reads the three PEM files.
    pub fn from_files(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
        principal_source: PrincipalSource,
    ) -> Result<NodeTls, TlsError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|error| TlsError::Pem {
                what: "cannot read a TLS file",
                reason: format!("{}: {error}", path.display()),
            })
        };
        Ok(NodeTls {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            principal_source,
        })
    }

    /// TLS for one of the node's listeners.
    pub fn server(
        &self,
        admission: Admission,
        revocations: Revocations,
    ) -> Result<ServerTls, TlsError> {
        ServerTls::new(
            &self.ca_pem,
            &self.cert_pem,
            &self.key_pem,
            admission,
            self.principal_source,
            revocations,
        )
    }

    /// TLS for the node's connections to other nodes, presenting its own
    /// certificate and verifying theirs against the address dialled.
    pub fn client(&self) -> Result<ClientTls, TlsError> {
        ClientTls::new(&self.ca_pem, Some((&self.cert_pem, &self.key_pem)), None)
    }
}

/// A listener's TLS: its certificate, and how it checks clients.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    source: PrincipalSource,
}

impl ServerTls {
    /// `ca_pem`: the CA(s) client certificates must chain to;
    /// `cert_pem`/`key_pem`: this server's chain and key.
    pub fn new(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        admission: Admission,
        source: PrincipalSource,
        revocations: Revocations,
    ) -> Result<ServerTls, TlsError> {
        // Node identities are always common names (`sc`, `spu:<id>`),
        // whatever clients' certificates use.
        let source = match admission {
            Admission::Nodes => PrincipalSource::CommonName,
            Admission::Clients | Admission::ClientsOrAnonymous => source,
        };
        let provider = provider();
        let roots = Arc::new(root_store(ca_pem)?);
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider));
        let builder = match admission {
            Admission::ClientsOrAnonymous => builder.allow_unauthenticated(),
            Admission::Clients | Admission::Nodes => builder,
        };
        let webpki = builder
            .build()
            .map_err(|error| TlsError::Verifier(error.to_string()))?;
        let verifier = Arc::new(Verifier {
            webpki,
            admission,
            source,
            revocations,
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificates(cert_pem)?, private_key(key_pem)?)?;
        // No session resumption: a resumed handshake restores the client's
        // certificate without running the verifier, so revocation would
        // be skipped. Every connection verifies its certificate afresh.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            source,
        })
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }

    /// The identity of an accepted connection's client, if it presented a
    /// certificate (the verifier already refused any it could not read).
    pub(crate) fn peer_identity(
        &self,
        stream: &tokio_rustls::server::TlsStream<TcpStream>,
    ) -> Option<PeerIdentity> {
        let certificate = stream.get_ref().1.peer_certificates()?.first()?;
        PeerIdentity::from_der(certificate, self.source).ok()
    }
}

/// A connecting side's TLS: the CA it trusts, its own certificate, and
/// the name it expects the server's certificate to carry.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// webpki's checks of the server's certificate, kept to build a
    /// verifier that also checks the server's principal.
    webpki: Arc<WebPkiServerVerifier>,
    /// Verified instead of the host dialled, when set (a certificate
    /// issued for a DNS name, reached by IP address).
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// `identity`: this side's certificate chain and key, or none (only
    /// `runnel login` connects without one).
    pub fn new(
        ca_pem: &[u8],
        identity: Option<(&[u8], &[u8])>,
        server_name: Option<&str>,
    ) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let roots = Arc::new(root_store(ca_pem)?);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|error| TlsError::Verifier(error.to_string()))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(Arc::clone(&verifier));
        let config = match identity {
            Some((cert_pem, key_pem)) => {
                builder.with_client_auth_cert(certificates(cert_pem)?, private_key(key_pem)?)?
            }
            None => builder.with_no_client_auth(),
        };
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|_| TlsError::ServerName(name.to_string()))
            })
            .transpose()?;
        Ok(ClientTls {
            config: Arc::new(config),
            webpki: verifier,
            server_name,
        })
    }

    /// The same settings, also requiring the server's certificate to name
    /// `principal` (by its common name): a node dialling the SC expects
    /// `sc`, a follower dialling its leader `spu:<leader>`. Host names
    /// alone do not tell nodes apart, since every node certificate of a
    /// local cluster is valid for `localhost`.
    pub fn expecting(&self, principal: &str) -> ClientTls {
        let mut config = (*self.config).clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(ExpectPrincipal {
                webpki: Arc::clone(&self.webpki),
                principal: principal.to_string(),
            }));
        ClientTls {
            config: Arc::new(config),
            webpki: Arc::clone(&self.webpki),
            server_name: self.server_name.clone(),
        }
    }

    /// Runs the handshake over `socket`, checking the server's
    /// certificate against `addr`'s host (or the configured name).
    pub(crate) async fn connect(
        &self,
        addr: &str,
        socket: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_name(addr)?,
        };
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, socket)
            .await
    }
}

/// The host part of `host:port` (`[v6]:port` too) as a name to verify.
fn host_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_string()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{host}` is not a name TLS can verify; set the TLS domain to verify instead"),
        )
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca_pem)? {
        roots.add(certificate).map_err(|error| TlsError::Pem {
            what: "a CA certificate cannot be used",
            reason: error.to_string(),
        })?;
    }
    Ok(roots)
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            what: "unreadable certificate PEM",
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            what: "no certificate found",
            reason: "the file holds no `BEGIN CERTIFICATE` block".into(),
        });
    }
    Ok(certificates)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| TlsError::Pem {
        what: "unreadable private key PEM",
        reason: error.to_string(),
    })
}

/// webpki's checks, then Runnel's: one readable principal, not revoked,
/// and a node identity where the listener admits only nodes.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<dyn ClientCertVerifier>,
    admission: Admission,
    source: PrincipalSource,
    revocations: Revocations,
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.admission != Admission::ClientsOrAnonymous
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|error| warn!(%error, "client certificate refused"))?;
        let identity = PeerIdentity::from_der(end_entity, self.source).map_err(|error| {
            warn!(%error, "client certificate refused: no usable principal");
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
        })?;
        if self.revocations.contains(&identity.serial) {
            warn!(principal = %identity.principal, serial = %identity.serial,
                "client certificate refused: revoked");
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        if self.admission == Admission::Nodes && !runnel_auth::is_node_identity(&identity.principal)
        {
            warn!(principal = %identity.principal,
                "client certificate refused: a private listener serves cluster nodes only");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// webpki's checks of a server's certificate, then that it names the
/// expected principal.
#[derive(Debug)]
struct ExpectPrincipal {
    webpki: Arc<WebPkiServerVerifier>,
    principal: String,
}

impl ServerCertVerifier for ExpectPrincipal {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let named = match PeerIdentity::from_der(end_entity, PrincipalSource::CommonName) {
            Ok(identity) if identity.principal == self.principal => return Ok(verified),
            Ok(identity) => format!("names `{}`", identity.principal),
            Err(error) => format!("names no node ({error})"),
        };
        warn!(expected = %self.principal, %named, "server certificate refused: not the node dialled");
        Err(rustls::Error::General(format!(
            "the server's certificate {named}, not the expected `{}`; the address dialled \
             reaches another node, or its certificate was issued for another id: check the \
             advertised address, or reissue the node's certificate",
            self.principal
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// What a TLS failure means for the person connecting, when the server
/// refused us with an alert; `None` for other errors.
pub(crate) fn refusal(error: &io::Error) -> Option<String> {
    let rustls::Error::AlertReceived(alert) = error.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    let why = match alert {
        AlertDescription::CertificateRequired => {
            "the server requires a client certificate; set the profile's certificate and key \
             (or run `runnel login`)"
        }
        AlertDescription::CertificateRevoked => "this client's certificate has been revoked",
        AlertDescription::CertificateExpired => {
            "this client's certificate has expired or is not valid yet; get a new one \
             (`runnel login`)"
        }
        AlertDescription::UnknownCA => {
            "this client's certificate is not signed by the cluster's CA"
        }
        AlertDescription::AccessDenied => {
            "this listener serves cluster nodes only (sc, spu:<id>); clients use the public \
             listeners"
        }
        AlertDescription::BadCertificate | AlertDescription::DecodeError => {
            "the server cannot read one principal from this client's certificate (it needs \
             exactly one common name, or the configured subject alternative name)"
        }
        AlertDescription::ProtocolVersion => "the server speaks only TLS 1.3",
        _ => "the server refused the TLS handshake",
    };
    Some(format!("{why} (TLS alert: {alert:?})"))
}

impl ByteStream for tokio_rustls::server::TlsStream<TcpStream> {
    type Reader = tokio::io::ReadHalf<Self>;
    type Writer = tokio::io::WriteHalf<Self>;

    fn into_split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }
}

impl ByteStream for tokio_rustls::client::TlsStream<TcpStream> {
    type Reader = tokio::io::ReadHalf<Self>;
    type Writer = tokio::io::WriteHalf<Self>;

    fn into_split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }
}

/// File ranges go through a buffer: the bytes must be encrypted.
impl FrameWrite for tokio::io::WriteHalf<tokio_rustls::server::TlsStream<TcpStream>> {}
impl FrameWrite for tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>> {}
