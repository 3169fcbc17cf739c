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
    SERIAL_LEN_MAX, certificate_ders, validate_principal,
};

/// A certificate time (seconds since the Unix epoch) as people read it:
/// `2024-05-01 12:00:00 UTC`, or the raw number when out of range.
pub fn utc_text(unix_seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix_seconds) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        ),
        Err(_) => format!("{unix_seconds} (Unix time)"),
    }
}

#[cfg(test)]
mod tests {
    use super::utc_text;

    #[test]
    fn certificate_times_read_as_utc() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_text(i64::MAX), format!("{} (Unix time)", i64::MAX));
    }
}
