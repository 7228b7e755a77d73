//! `franca`: the server binary. It parses the command line, loads the one TOML configuration
//! file, and either runs the server (`serve`, the default) or administers accounts directly in
//! storage (`user …`), telling a running server over its control socket when sessions must end.

mod import;
mod serve;
mod user;

use clap::{Parser, Subcommand};
use franca_core::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "franca",
    version,
    about = "Franca instant-messaging server (XMPP)"
)]
struct Cli {
    /// Configuration file (TOML). Without one, the zero-config defaults are used.
    #[arg(long, short, env = "FRANCA_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Check the configuration file and exit.
    CheckConfig,
    /// Manage accounts. Passwords are read from stdin, or prompted for on a terminal.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Import accounts (credentials, rosters, offline messages, vCards) from XEP-0227 files,
    /// as exported by ejabberd or Prosody; a directory is searched for *.xml files. Existing
    /// accounts are left unchanged.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account.
    Add { jid: String },
    /// Change an account's password (this also revokes its FAST tokens).
    Passwd { jid: String },
    /// Delete an account and all of its data, ending its sessions.
    Remove { jid: String },
    /// List accounts, optionally of one domain.
    List { domain: Option<String> },
    /// Revoke every XEP-0484 FAST token of an account: its clients must log in with the
    /// password again.
    RevokeTokens { jid: String },
    /// Allow or deny an account's exchange of stanzas with other servers (federation); without
    /// allow|deny, show which applies. A running server applies a change within 5 seconds.
    Federation {
        jid: String,
        action: Option<FederationAction>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FederationAction {
    /// The server's [s2s] policy alone decides (the default).
    Allow,
    /// The account may not exchange stanzas with other servers.
    Deny,
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(cli.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("franca: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("franca: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve::run(config, cli.config)),
        Command::CheckConfig => {
            println!(
                "configuration OK: domains {}, storage {}",
                config.server.domains.join(", "),
                redact(&config.storage_url())
            );
            Ok(())
        }
        Command::User { command } => runtime.block_on(user::run(config, command)),
        Command::Import { paths } => runtime.block_on(import::run(config, paths)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("franca: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A storage URL fit for logs: the password is hidden.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
