//! `custody admin user ...`: local accounts, run against the configured database by someone who holds the
//! server's configuration (that is how the first administrator is made).

use clap::Subcommand;
use custody_cases::{Accounts, AccountsConfig, NewUser};
use custody_core::BadgeNo;
use custody_core::access::{Roles, Username};
use std::io::BufRead;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. Roles: officer, case_handler, supervisor, auditor, commander, admin (several
    /// may be given, comma-separated). The password comes from a file or the first line of standard
    /// input, never from the command line, and must be at least 10 characters.
    Add {
        /// Login name: lowercase letters, digits, '.', '_' and '-', starting with a letter
        username: String,
        /// Full name shown in the console and the audit log
        #[arg(long)]
        name: String,
        /// Comma-separated roles, e.g. case_handler,supervisor
        #[arg(long)]
        roles: String,
        /// The officer's badge number (警号) for an officer's account: they see footage of recorders
        /// they held
        #[arg(long)]
        badge: Option<String>,
        /// Read the password from this file (first line)
        #[arg(long, conflicts_with = "password_stdin")]
        password_file: Option<PathBuf>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// List accounts with their roles.
    List {
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// Change an account: roles, badge, password; disable (ends its sessions) or enable it.
    Set {
        username: String,
        #[arg(long)]
        roles: Option<String>,
        /// Badge number; an empty string removes it
        #[arg(long)]
        badge: Option<String>,
        /// New password from this file (ends every session of the account)
        #[arg(long, conflicts_with = "password_stdin")]
        password_file: Option<PathBuf>,
        /// New password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
        /// Disable the account and end its sessions
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Enable a disabled account
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// Issue a session token for an account without its password (for scripts and benchmarks) and
    /// print it once.
    Token {
        username: String,
        /// Lifetime, e.g. 1h or 30d [default: the server's session_ttl]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
}

fn read_password(file: Option<&Path>, stdin: bool) -> anyhow::Result<Option<String>> {
    let line = if let Some(f) = file {
        std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("reading the password file {}: {e}", f.display()))?
    } else if stdin {
        let mut s = String::new();
        std::io::stdin().lock().read_line(&mut s)?;
        s
    } else {
        return Ok(None);
    };
    Ok(Some(
        line.lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    ))
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Runs a user command against the configured database (the same settings as `serve`).
pub async fn user(config_file: &Path, explicit: bool, cmd: UserCommand) -> anyhow::Result<()> {
    let storage = match &cmd {
        UserCommand::Add { storage, .. }
        | UserCommand::List { storage }
        | UserCommand::Set { storage, .. }
        | UserCommand::Token { storage, .. } => storage.clone(),
    };
    let config = crate::Config::load(config_file, explicit, &storage)?;
    let meta = crate::admin::open_meta(config_file, explicit, &storage).await?;
    let accounts = Accounts::new(
        meta.clone(),
        AccountsConfig {
            session_ttl: config.session_ttl,
        },
    );
    let result = async {
        match cmd {
            UserCommand::Add {
                username,
                name,
                roles,
                badge,
                password_file,
                password_stdin,
                ..
            } => {
                let password = read_password(password_file.as_deref(), password_stdin)?
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "give the password with --password-file or --password-stdin"
                        )
                    })?;
                let u = accounts
                    .add_user(NewUser {
                        username: Username::parse(username).map_err(err)?,
                        display_name: name,
                        roles: Roles::parse(&roles).map_err(err)?,
                        badge: badge.map(BadgeNo::parse).transpose().map_err(err)?,
                        password,
                    })
                    .await
                    .map_err(err)?;
                accounts
                    .audit(
                        "system",
                        "user.create",
                        Some(&u.actor()),
                        "ok",
                        Some(&u.roles.to_list()),
                    )
                    .await;
                println!(
                    "user {} created with roles {}",
                    u.username,
                    u.roles.to_list()
                );
                Ok(())
            }
            UserCommand::List { .. } => {
                let mut after: Option<Username> = None;
                println!(
                    "{:<24} {:<32} {:<10} {:<8} name",
                    "username", "roles", "badge", "state"
                );
                loop {
                    let page = accounts.list(after.as_ref(), 500).await.map_err(err)?;
                    for (u, disabled) in &page {
                        println!(
                            "{:<24} {:<32} {:<10} {:<8} {}",
                            u.username.as_str(),
                            u.roles.to_list(),
                            u.badge.as_ref().map(BadgeNo::as_str).unwrap_or("-"),
                            if disabled.is_some() {
                                "disabled"
                            } else {
                                "active"
                            },
                            u.display_name
                        );
                    }
                    match page.last() {
                        Some((u, _)) if page.len() == 500 => after = Some(u.username.clone()),
                        _ => break,
                    }
                }
                Ok(())
            }
            UserCommand::Set {
                username,
                roles,
                badge,
                password_file,
                password_stdin,
                disable,
                enable,
                ..
            } => {
                let name = Username::parse(username).map_err(err)?;
                let roles = roles.map(|r| Roles::parse(&r)).transpose().map_err(err)?;
                let badge = badge
                    .map(|b| {
                        if b.is_empty() {
                            Ok(None)
                        } else {
                            BadgeNo::parse(b).map(Some)
                        }
                    })
                    .transpose()
                    .map_err(err)?;
                let password = read_password(password_file.as_deref(), password_stdin)?;
                let disabled = if disable {
                    Some(true)
                } else if enable {
                    Some(false)
                } else {
                    None
                };
                let u = accounts
                    .update(&name, roles, badge, password, disabled)
                    .await
                    .map_err(err)?;
                accounts
                    .audit("system", "user.update", Some(&u.actor()), "ok", None)
                    .await;
                println!("user {} updated: roles {}", u.username, u.roles.to_list());
                Ok(())
            }
            UserCommand::Token { username, ttl, .. } => {
                let name = Username::parse(username).map_err(err)?;
                let s = accounts.issue_for(&name, ttl).await.map_err(err)?;
                eprintln!("session for {} valid until {}", name, s.expires_at);
                println!("{}", s.token);
                Ok(())
            }
        }
    }
    .await;
    meta.close().await;
    result
}
