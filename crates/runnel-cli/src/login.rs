//! `runnel login`: a user's password exchanged for a certificate, and a
//! profile that uses it.
//!
//! The key pair is generated here and never leaves the machine. Key,
//! certificate and CA go to `RUNNEL_HOME/profiles/<profile>/` (the key with
//! mode 0600), and the profile, named after the user unless `--profile`
//! says otherwise, becomes current. The CA stored is the `--tls-ca` file,
//! which verified the SC, never the CA the SC reports: trusting what the
//! server says about itself would let a server the user did not mean to
//! trust choose what the profile trusts from then on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use runnel_client::{ClientError, LoginOptions, Profile, ProfileTls, Profiles, login, runnel_home};
use runnel_pki::{certificate_ders, utc_text};

use crate::CommandResult;
use crate::files;
use crate::user::{PasswordArgs, parse_user_name};

/// Directory of the Runnel home holding one directory per logged-in
/// profile.
const PROFILES_DIR: &str = "profiles";
/// Largest CA file read.
const MAX_CA_BYTES: u64 = 1 << 20;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The SC's public address (host:port).
    address: String,
    /// The user to log in as.
    #[arg(long, value_parser = parse_user_name)]
    user: String,
    /// The cluster CA's certificate (PEM), to recognise the SC by (from
    /// the cluster's operator; `RUNNEL_HOME/local/tls/ca.pem` for a local
    /// cluster).
    #[arg(long, value_name = "FILE")]
    tls_ca: PathBuf,
    /// The name to verify in the servers' certificates instead of the host
    /// dialled.
    #[arg(long, value_name = "NAME")]
    tls_domain: Option<String>,
    #[command(flatten)]
    password: PasswordArgs,
    /// Ask for a certificate valid this long (e.g. 7d, 12h); the cluster's
    /// maximum applies when omitted or shorter.
    #[arg(long, value_parser = crate::server::positive_duration)]
    cert_lifetime: Option<runnel_types::Duration>,
}

pub async fn run(profile: Option<String>, args: LoginArgs) -> CommandResult {
    let given = profile.is_some();
    let name = profile.unwrap_or_else(|| args.user.clone());
    check_profile_name(&name).map_err(|error| {
        if given {
            error
        } else {
            format!("{error}; the profile is named after the user unless you give --profile NAME")
        }
    })?;
    let home = runnel_home()?;
    let ca_pem = read_ca(&args.tls_ca)?;
    let password = args.password.read(&args.user, false)?;
    let credentials = login(&LoginOptions {
        sc_addr: args.address.clone(),
        ca_pem: ca_pem.clone(),
        domain: args.tls_domain.clone(),
        user: args.user,
        password,
        lifetime: args.cert_lifetime.map(runnel_types::Duration::to_std),
    })
    .await
    .map_err(|error| match error {
        ClientError::LoginCa(reason) => format!(
            "the CA certificate {} cannot be used for TLS: {reason}",
            args.tls_ca.display()
        ),
        other => other.to_string(),
    })?;
    let response = &credentials.response;
    let relative = Path::new(PROFILES_DIR).join(&name);
    let directory = home.join(&relative);
    files::create_private_dir(&directory)?;
    files::write_whole(
        &directory.join("key.pem"),
        credentials.key_pem.as_bytes(),
        files::PRIVATE,
    )?;
    files::write_whole(
        &directory.join("cert.pem"),
        response.certificate_pem.as_bytes(),
        files::PUBLIC,
    )?;
    files::write_whole(&directory.join("ca.pem"), &ca_pem, files::PUBLIC)?;
    if !reports_same_ca(&ca_pem, response.ca_pem.as_bytes()) {
        eprintln!(
            "warning: the SC reported a CA certificate that differs from {}; the profile keeps \
             {0}, which verified the SC. Ask the cluster's operator which CA is current",
            args.tls_ca.display()
        );
    }
    let mut profiles = Profiles::load(&home)?;
    // Relative to the Runnel home, so the home can be moved whole.
    profiles.upsert(Profile {
        tls: Some(ProfileTls {
            ca: relative.join("ca.pem"),
            cert: relative.join("cert.pem"),
            key: relative.join("key.pem"),
            domain: args.tls_domain,
        }),
        ..Profile::plaintext(&name, &args.address)
    });
    profiles.switch(&name)?;
    profiles.save()?;
    println!(
        "logged in as {}: certificate {} valid until {}; profile '{name}' is current",
        response.principal,
        response.serial,
        utc_text(response.not_after_unix)
    );
    println!("key and certificate: {}", directory.display());
    Ok(ExitCode::SUCCESS)
}

/// A profile name becomes a directory name: letters, digits, `.`, `_`,
/// `-` and `@`, not starting with a dot.
fn check_profile_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) || name.len() > 64 {
        return Err(format!(
            "profile name {name:?} cannot name a directory; use 1 to 64 of A-Z a-z 0-9 . _ - @, \
             not starting with '.'"
        ));
    }
    Ok(())
}

fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let unreadable = |reason: String| {
        format!(
            "cannot read the CA certificate {}: {reason}",
            path.display()
        )
    };
    let length = std::fs::metadata(path)
        .map_err(|error| unreadable(error.to_string()))?
        .len();
    if length > MAX_CA_BYTES {
        return Err(unreadable(format!(
            "it is {length} bytes long; a CA certificate is at most {MAX_CA_BYTES} bytes"
        )));
    }
    std::fs::read(path).map_err(|error| unreadable(error.to_string()))
}

/// Whether every certificate in the SC's reported CA (PEM) is one of those
/// in the user's CA file (PEM), compared as DER, so line endings, comments
/// and bundles do not matter. A report with no certificate is not the same.
fn reports_same_ca(trusted_pem: &[u8], reported_pem: &[u8]) -> bool {
    let (Some(trusted), Some(reported)) = (
        certificate_ders(trusted_pem),
        certificate_ders(reported_pem),
    ) else {
        return false;
    };
    !reported.is_empty() && reported.iter().all(|der| trusted.contains(der))
}

#[cfg(test)]
mod tests {
    use runnel_pki::ClusterCa;
    use time::{Duration, OffsetDateTime};

    use super::*;

    fn ca_pem() -> String {
        ClusterCa::generate("test", OffsetDateTime::now_utc(), Duration::days(1))
            .expect("CA")
            .cert_pem()
            .to_string()
    }

    #[test]
    fn the_same_ca_in_another_spelling_or_in_a_bundle_is_the_same() {
        let ca = ca_pem();
        let other = ca_pem();
        assert!(reports_same_ca(ca.as_bytes(), ca.as_bytes()));
        let crlf = ca.replace('\n', "\r\n");
        assert!(reports_same_ca(crlf.as_bytes(), ca.as_bytes()));
        let bundle = format!("# the cluster CA and another\n{other}{ca}");
        assert!(reports_same_ca(bundle.as_bytes(), ca.as_bytes()));
    }

    #[test]
    fn a_different_or_unreadable_reported_ca_is_different() {
        let ca = ca_pem();
        let other = ca_pem();
        assert!(!reports_same_ca(ca.as_bytes(), other.as_bytes()));
        assert!(!reports_same_ca(
            ca.as_bytes(),
            format!("{ca}{other}").as_bytes()
        ));
        assert!(!reports_same_ca(ca.as_bytes(), b""));
        assert!(!reports_same_ca(
            ca.as_bytes(),
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"
        ));
    }

    #[test]
    fn profile_names_must_be_safe_directory_names() {
        for good in ["alice", "alice@example.com", "a.b-c_d", "x"] {
            assert_eq!(check_profile_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            &"x".repeat(65),
        ] {
            let error = check_profile_name(bad).expect_err(bad);
            assert!(error.contains("cannot name a directory"), "{error}");
        }
    }
}
