//! `runnel profile …`: which cluster the other commands talk to.

use std::process::ExitCode;

use runnel_client::{Profiles, runnel_home};

use crate::{CommandResult, ProfileCommand};

pub fn run(command: ProfileCommand) -> CommandResult {
    let mut profiles = Profiles::load(&runnel_home()?)?;
    match command {
        ProfileCommand::List => {
            let current = profiles.current().ok().map(|profile| profile.name);
            let mut table = crate::admin::table(["", "PROFILE", "SC ADDRESS"]);
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
                ]);
            }
            println!("{table}");
        }
        ProfileCommand::Current => {
            let profile = profiles.current()?;
            println!("{} ({})", profile.name, profile.sc_addr);
        }
        ProfileCommand::Switch { name } => {
            profiles.switch(&name)?;
            profiles.save()?;
            println!("profile '{name}' is current");
        }
        ProfileCommand::Add { name, address } => {
            profiles.upsert(&name, &address);
            profiles.save()?;
            println!("profile '{name}' points at {address}");
        }
        ProfileCommand::Delete { name } => {
            profiles.delete(&name)?;
            profiles.save()?;
            println!("profile '{name}' deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
