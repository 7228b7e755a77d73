//! `franca user …`: account administration straight against storage, so it works whether or not
//! the server is running (a running server reads credentials and XEP-0484 FAST tokens at each
//! login, so a revoked token is refused at once). Removing an account
//! also asks a running server, over its control socket, to end the account's sessions. The
//! federation bar (`user federation`) is read by a running server through a 5-second cache.

use crate::{FederationAction, UserCommand};
use franca_core::Config;
use jid::BareJid;
use std::io::{BufRead, IsTerminal};

pub async fn run(config: Config, command: UserCommand) -> Result<(), String> {
    let store = franca_store::open(&config.storage_url())
        .await
        .map_err(|e| format!("storage: {e}"))?;
    let result = match command {
        UserCommand::Add { jid } => {
            let user = account(&config, &jid, true)?;
            if store.user_exists(user.as_str()).await.map_err(db)? {
                return Err(format!("user {user} already exists"));
            }
            let password = read_password(&format!("Password for {user}: "))?;
            store
                .create_user(
                    user.as_str(),
                    &franca_core::credentials::from_password(&password),
                )
                .await
                .map_err(db)?;
            println!("created {user}");
            Ok(())
        }
        UserCommand::Passwd { jid } => {
            let user = account(&config, &jid, false)?;
            if !store.user_exists(user.as_str()).await.map_err(db)? {
                return Err(format!("unknown user {user}"));
            }
            let password = read_password(&format!("New password for {user}: "))?;
            store
                .set_credentials(
                    user.as_str(),
                    &franca_core::credentials::from_password(&password),
                )
                .await
                .map_err(db)?;
            // Whoever knew the old password may have taken a token with it.
            let revoked = store.revoke_fast_tokens(user.as_str()).await.map_err(db)?;
            println!("password changed for {user}{}", revoked_note(revoked));
            Ok(())
        }
        UserCommand::RevokeTokens { jid } => {
            let user = account(&config, &jid, false)?;
            if !store.user_exists(user.as_str()).await.map_err(db)? {
                return Err(format!("unknown user {user}"));
            }
            let revoked = store.revoke_fast_tokens(user.as_str()).await.map_err(db)?;
            println!("revoked {revoked} FAST token(s) of {user}");
            Ok(())
        }
        UserCommand::Remove { jid } => {
            let user = account(&config, &jid, false)?;
            // A running server removes the account itself, so it can end the sessions and
            // send their unavailable presence first; otherwise storage is changed directly.
            let data_dir = &config.server.data_dir;
            let by_server = franca_net::control::notify_remove(data_dir, user.as_str())
                .await
                .map_err(|e| format!("{e}: {user}"))?;
            if !by_server {
                match store.remove_user(user.as_str()).await {
                    Ok(()) => {}
                    Err(franca_store::StoreError::UnknownUser(_)) => {
                        return Err(format!("unknown user {user}"));
                    }
                    Err(e) => return Err(db(e)),
                }
            }
            println!(
                "removed {user}{}",
                if by_server {
                    " and ended its sessions"
                } else {
                    ""
                }
            );
            Ok(())
        }
        UserCommand::List { domain } => {
            if let Some(d) = domain.as_deref().filter(|d| !config.serves(d)) {
                return Err(format!("domain {d} is not served by this server"));
            }
            for user in store.list_users(domain.as_deref()).await.map_err(db)? {
                if store.federation_barred(&user).await.map_err(db)? {
                    println!("{user} (federation denied)");
                } else {
                    println!("{user}");
                }
            }
            Ok(())
        }
        UserCommand::Federation { jid, action } => {
            let user = account(&config, &jid, false)?;
            if !store.user_exists(user.as_str()).await.map_err(db)? {
                return Err(format!("unknown user {user}"));
            }
            match action {
                None => {
                    let barred = store.federation_barred(user.as_str()).await.map_err(db)?;
                    println!(
                        "{user}: federation {}",
                        if barred { "denied" } else { "allowed" }
                    );
                }
                Some(action) => {
                    let deny = matches!(action, FederationAction::Deny);
                    match store.set_federation_barred(user.as_str(), deny).await {
                        Ok(()) => {}
                        Err(franca_store::StoreError::UnknownUser(_)) => {
                            return Err(format!("unknown user {user}"));
                        }
                        Err(e) => return Err(db(e)),
                    }
                    // No control-socket message: the server caches the flag for
                    // franca_s2s::policy::ACCOUNT_FLAG_TTL (5 s) and then reads it again.
                    println!(
                        "federation {} for {user} (a running server applies it within 5 seconds)",
                        if deny { "denied" } else { "allowed" }
                    );
                }
            }
            Ok(())
        }
    };
    store.close().await;
    result
}

fn revoked_note(revoked: u64) -> String {
    if revoked == 0 {
        String::new()
    } else {
        format!(" (and revoked {revoked} FAST token(s))")
    }
}

fn db(e: franca_store::StoreError) -> String {
    format!("storage: {e}")
}

/// Parse and check an account JID. New accounts must also have a localpart that is valid under
/// both nodeprep and PRECIS (RFC 7622), so every client and server can address them.
fn account(config: &Config, jid: &str, new: bool) -> Result<BareJid, String> {
    let bare = BareJid::new(jid).map_err(|e| format!("invalid JID {jid:?}: {e}"))?;
    let Some(node) = bare.node() else {
        return Err(format!(
            "invalid JID {jid:?}: an account needs a user part (user@domain)"
        ));
    };
    if !config.serves(bare.domain().as_str()) {
        return Err(format!(
            "domain {} is not served by this server (served: {})",
            bare.domain(),
            config.server.domains.join(", ")
        ));
    }
    if new && !franca_proto::jidprep::valid_new_localpart(node.as_str()) {
        return Err(format!(
            "invalid JID {jid:?}: the user part is not allowed for new accounts"
        ));
    }
    Ok(bare)
}

/// Read a password: from stdin when it is not a terminal (one line), otherwise prompted for
/// twice without echo. Never from the command line, where other users could see it.
fn read_password(prompt: &str) -> Result<String, String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt).map_err(|e| e.to_string())?;
        let second = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != second {
            return Err("the passwords do not match".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    if password.len() > 1024 {
        return Err("the password is longer than 1024 bytes".into());
    }
    Ok(password)
}
