//! `runnel user …`: users who may log in, their passwords and their
//! certificates, through the SC (admin only, on a TLS cluster).

use std::io::BufRead;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use runnel_client::UserInfo;
use serde_json::json;

use crate::admin::admin;
use crate::{CommandResult, Output};

/// Longest password accepted, in bytes.
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user who may log in with a password (prompted twice).
    Add {
        #[arg(value_parser = parse_user_name)]
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// List users, the roles bound to them and their certificates.
    List {
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Delete a user and revoke every certificate issued to them.
    Delete {
        #[arg(value_parser = parse_user_name)]
        name: String,
    },
    /// Set a user's password (prompted twice). Certificates issued before
    /// stay valid; revoke them with `runnel user revoke`.
    Passwd {
        #[arg(value_parser = parse_user_name)]
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Revoke every unexpired certificate of a user, or one certificate by
    /// serial (any certificate of the cluster CA). SC and SPUs refuse a
    /// revoked certificate at once, on open connections too.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of standard input instead of
    /// prompting (for scripts). Only the line's end is removed.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The user whose certificates to revoke.
    #[arg(required_unless_present = "serial", value_parser = parse_user_name)]
    name: Option<String>,
    /// The serial number of one certificate (hex, as `runnel user list`
    /// and `runnel login` print it).
    #[arg(long, conflicts_with = "name")]
    serial: Option<String>,
}

pub fn parse_user_name(text: &str) -> Result<String, String> {
    runnel_auth::validate_user_name(text)
        .map(|()| text.to_string())
        .map_err(|error| error.to_string())
}

pub async fn run(profile: Option<String>, command: UserCommand) -> CommandResult {
    // A password is read before connecting, so a slow typist does not
    // race a connection's timeouts.
    match command {
        UserCommand::Add { name, password } => {
            let password = password.read(&name, true)?;
            admin(profile).await?.add_user(&name, &password).await?;
            println!("user '{name}' added; they can now run `runnel login ADDRESS --user {name}`");
        }
        UserCommand::List { output } => {
            print_users(&admin(profile).await?.list_users().await?, output);
        }
        UserCommand::Delete { name } => {
            admin(profile).await?.delete_user(&name).await?;
            println!("user '{name}' deleted and their certificates revoked");
        }
        UserCommand::Passwd { name, password } => {
            let password = password.read(&name, true)?;
            admin(profile).await?.set_password(&name, &password).await?;
            println!("password of '{name}' changed");
        }
        UserCommand::Revoke(args) => revoke(profile, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(
    profile: Option<String>,
    args: RevokeArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let admin = admin(profile).await?;
    let response = match (args.serial, args.name) {
        (Some(serial), _) => admin.revoke_serial(&serial).await?,
        (None, Some(name)) => admin.revoke_user(&name).await?,
        (None, None) => return Err("give a user name or --serial".into()),
    };
    if response.revoked.is_empty() {
        println!("nothing newly revoked: no unexpired, unrevoked certificate matched");
    }
    for serial in &response.revoked {
        println!("revoked certificate {serial}");
    }
    Ok(())
}

impl PasswordArgs {
    /// The password for `user`: one line of standard input, or prompted
    /// on the terminal (twice when `confirm`).
    pub fn read(&self, user: &str, confirm: bool) -> Result<String, Box<dyn std::error::Error>> {
        let password = if self.password_stdin {
            password_line(std::io::stdin().lock())?
        } else {
            prompt(user, confirm)?
        };
        if password.is_empty() {
            return Err("the password is empty; give one".into());
        }
        Ok(password)
    }
}

fn prompt(user: &str, confirm: bool) -> Result<String, Box<dyn std::error::Error>> {
    let prompted = |text: &str| {
        rpassword::prompt_password(text).map_err(|error| {
            format!("cannot read the password from the terminal ({error}); use --password-stdin")
        })
    };
    let password = prompted(&format!("password for {user}: "))?;
    if confirm && prompted(&format!("password for {user} again: "))? != password {
        return Err("the two passwords differ; nothing was changed, try again".into());
    }
    Ok(password)
}

/// The first line of `input` without its line end (`\n` or `\r\n`);
/// nothing else is trimmed, spaces belong to the password.
fn password_line(input: impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    let limit = MAX_PASSWORD_BYTES as u64 + 2;
    input
        .take(limit)
        .read_line(&mut line)
        .map_err(|error| format!("cannot read the password from standard input: {error}"))?;
    let password = line
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&line);
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(password.to_string())
}

fn print_users(users: &[UserInfo], output: Output) {
    match output {
        Output::Json => {
            for user in users {
                let certificates: Vec<_> = user
                    .certificates
                    .iter()
                    .map(|certificate| {
                        json!({
                            "serial": certificate.serial,
                            "not_after_unix": certificate.not_after_unix,
                            "revoked": certificate.revoked,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"name": user.name, "roles": user.roles, "certificates": certificates})
                );
            }
        }
        Output::Text if users.is_empty() => {
            println!("no users; add one with `runnel user add NAME`");
        }
        Output::Text => {
            let mut table = crate::admin::table(["NAME", "ROLES", "CERTIFICATES"]);
            for user in users {
                let certificates: Vec<String> = user
                    .certificates
                    .iter()
                    .map(|certificate| {
                        format!(
                            "{} until {}{}",
                            certificate.serial,
                            runnel_pki::utc_text(certificate.not_after_unix),
                            if certificate.revoked {
                                " (revoked)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect();
                table.add_row([
                    user.name.clone(),
                    none_if_empty(user.roles.join(", ")),
                    none_if_empty(certificates.join("\n")),
                ]);
            }
            println!("{table}");
        }
    }
}

fn none_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_line_loses_its_line_end_only() {
        let read = |input: &str| password_line(input.as_bytes());
        assert_eq!(read("secret\n").as_deref(), Ok("secret"));
        assert_eq!(read("secret\r\n").as_deref(), Ok("secret"));
        assert_eq!(read(" spaced out \n").as_deref(), Ok(" spaced out "));
        assert_eq!(read("no newline").as_deref(), Ok("no newline"));
        assert_eq!(read("first\nsecond\n").as_deref(), Ok("first"));
        assert_eq!(read("").as_deref(), Ok(""));
        let exact = "x".repeat(MAX_PASSWORD_BYTES);
        assert_eq!(read(&format!("{exact}\n")), Ok(exact.clone()));
        let error = read(&format!("{exact}x\n")).expect_err("too long");
        assert!(error.contains("longer than 1024 bytes"), "{error}");
    }
}
