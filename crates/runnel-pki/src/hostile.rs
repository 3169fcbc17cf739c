//! Certificates that must be refused, for tests of the servers: built with
//! a given CA, so that only the property under test is wrong.

use rcgen::{DnType, ExtendedKeyUsagePurpose};
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::ca::{LeafSubject, common_name_only, validity_window};
use crate::{ClusterCa, IssuedCert, PkiError};

/// A client certificate whose subject holds two common names, `cn1` then
/// `cn2`, valid from one minute before `now` for a day.
///
/// rcgen's `DistinguishedName` keeps one value per attribute type, so the
/// second CN is added under the same OID (2.5.4.3) spelled as a custom type.
pub fn with_two_common_names(
    ca: &ClusterCa,
    cn1: &str,
    cn2: &str,
    now: OffsetDateTime,
) -> Result<IssuedCert, PkiError> {
    let now = now.to_offset(UtcOffset::UTC);
    let mut distinguished_name = common_name_only(cn1.to_owned());
    distinguished_name.push(DnType::CustomDnType(vec![2, 5, 4, 3]), cn2);
    let (not_before, not_after) = validity_window(
        now.checked_sub(Duration::minutes(1)),
        now.checked_add(Duration::days(1)),
    )?;
    ca.issue_for_new_key(LeafSubject {
        distinguished_name,
        subject_alt_names: Vec::new(),
        extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
        not_before,
        not_after,
    })
}

/// A node-style certificate for `cn` that expired a day ago: valid from
/// `now` - 2 days to `now` - 1 day.
pub fn expired(ca: &ClusterCa, cn: &str, now: OffsetDateTime) -> Result<IssuedCert, PkiError> {
    let now = now.to_offset(UtcOffset::UTC);
    let (not_before, not_after) = validity_window(
        now.checked_sub(Duration::days(2)),
        now.checked_sub(Duration::days(1)),
    )?;
    ca.issue_for_new_key(LeafSubject {
        distinguished_name: common_name_only(cn.to_owned()),
        subject_alt_names: Vec::new(),
        extended_key_usages: vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        not_before,
        not_after,
    })
}
