//! Certificates for a Runnel cluster: the cluster CA, the node, admin and
//! user certificates it signs, the CSR `runnel login` sends, and the
//! principal a presented certificate names.
//!
//! Pure: PEM text and DER bytes in, values out. No files, no sockets, no
//! clock — callers pass `now` wherever time matters.

mod ca;
pub mod hostile;
mod principal;

pub use ca::{
    CSR_PEM_LEN_MAX, ClusterCa, IssuedCert, KeyAndCsr, PkiError, SignedCert, generate_csr,
};
pub use principal::{
    PRINCIPAL_LEN_MAX, ParsePrincipalSourceError, PeerIdentity, PrincipalError, PrincipalSource,
    SERIAL_LEN_MAX, validate_principal,
};
