//! `runnel profile …`: which cluster the other commands talk to, and with
//! which TLS identity.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use runnel_client::{Profile, ProfileTls, Profiles, runnel_home};

use crate::{CommandResult, ProfileCommand};

/// `runnel profile add`: a name, the SC's address, and TLS files.
#[derive(Debug, Args)]
pub struct AddArgs {
    name: String,
    /// The SC's public address (host:port).
    address: String,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// The TLS identity of a profile: all three files, or none for a
/// cluster without TLS.
#[derive(Debug, Args)]
pub struct ClientTlsArgs {
    /// The cluster CA's certificate (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), signed by the cluster CA.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// The name to verify in servers' certificates instead of the host
    /// dialled.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_domain: Option<String>,
}

impl ClientTlsArgs {
    /// The settings with absolute paths (the profile is used from any
    /// directory); `None` without TLS.
    fn settings(self) -> Result<Option<ProfileTls>, Box<dyn std::error::Error>> {
        let (Some(ca), Some(cert), Some(key)) = (self.tls_ca, self.tls_cert, self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(ProfileTls {
            ca: std::path::absolute(ca)?,
            cert: std::path::absolute(cert)?,
            key: std::path::absolute(key)?,
            domain: self.tls_domain,
        }))
    }
}

pub fn run(command: ProfileCommand) -> CommandResult {
    let mut profiles = Profiles::load(&runnel_home()?)?;
    match command {
        ProfileCommand::List => {
            let current = profiles.current().ok().map(|profile| profile.name);
            let mut table = crate::admin::table(["", "PROFILE", "SC ADDRESS", "TLS"]);
            for profile in profiles.list() {
                let marker = if Some(&profile.name) == current.as_ref() {
                    "*"
                } else {
                    ""
                };
                table.add_row([
                    marker.to_string(),
                    profile.name.clone(),
                    profile.sc_addr.clone(),
                    tls_text(&profile),
                ]);
            }
            println!("{table}");
        }
        ProfileCommand::Current => {
            let profile = profiles.current()?;
            println!(
                "{} ({}, {})",
                profile.name,
                profile.sc_addr,
                tls_text(&profile)
            );
        }
        ProfileCommand::Switch { name } => {
            profiles.switch(&name)?;
            profiles.save()?;
            println!("profile '{name}' is current");
        }
        ProfileCommand::Add(args) => add(&mut profiles, args)?,
        ProfileCommand::Delete { name } => {
            profiles.delete(&name)?;
            profiles.save()?;
            println!("profile '{name}' deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds or changes a profile; its TLS files are read first, so a typo is
/// reported now rather than at the next command.
fn add(profiles: &mut Profiles, args: AddArgs) -> Result<(), Box<dyn std::error::Error>> {
    let tls = args.tls.settings()?;
    if let Some(tls) = &tls {
        tls.client_tls()?;
    }
    profiles.upsert(Profile {
        tls,
        ..Profile::plaintext(&args.name, &args.address)
    });
    profiles.save()?;
    let profile = profiles.get(&args.name)?;
    println!(
        "profile '{}' points at {} ({})",
        profile.name,
        profile.sc_addr,
        tls_text(&profile)
    );
    Ok(())
}

/// `TLS as <certificate>` or `plaintext`.
fn tls_text(profile: &Profile) -> String {
    match &profile.tls {
        Some(tls) => format!("TLS with {}", tls.cert.display()),
        None => "plaintext".to_string(),
    }
}
