//! The populated store of M7 (notes D-perf §4: 100k accounts and 1M stored messages), put in
//! place through each server's own bulk path, because registering 100k accounts over XMPP
//! would take most of an hour per server:
//!
//! - Franca: XEP-0227 files, read by `franca import`;
//! - Prosody: its `internal` storage files, written directly (the `accounts/*.dat` and
//!   `offline/*.list` Lua data files Prosody itself writes);
//! - ejabberd: the same Prosody files, read by `ejabberdctl import_prosody` into Mnesia.
//!
//! Every account has the bench password as precomputed SCRAM keys (one salt for all: the
//! stored keys are what matter for loading, not their variety) and `messages / users` offline
//! messages. Offline messages are the one message store all three have enabled alike; Franca
//! has no archive yet, so "archived" reads "stored" here.
//!
//! A seeded directory is marked and reused by later rounds: seeding ejabberd takes minutes.

use crate::server::{DOMAIN, Kind, PASSWORD, ServerDir};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Account names: `s1` … `sN`.
pub const PREFIX: &str = "s";
const SALT: &[u8] = b"franca-bench-salt";
const ITERATIONS: u32 = 4096;
/// Accounts per XEP-0227 file (a few MB each).
const PER_FILE: u32 = 1000;

#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub users: u32,
    pub messages: u32,
}

/// SCRAM keys of [`PASSWORD`] for one hash (RFC 5802 §3).
struct Keys {
    stored: Vec<u8>,
    server: Vec<u8>,
}

fn keys_sha1() -> Keys {
    let mut salted = [0u8; 20];
    pbkdf2::pbkdf2_hmac::<Sha1>(PASSWORD.as_bytes(), SALT, ITERATIONS, &mut salted);
    let mac = |msg: &[u8]| {
        let mut m = Hmac::<Sha1>::new_from_slice(&salted).expect("any key length");
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    };
    Keys {
        stored: Sha1::digest(mac(b"Client Key")).to_vec(),
        server: mac(b"Server Key"),
    }
}

fn keys_sha256() -> Keys {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(PASSWORD.as_bytes(), SALT, ITERATIONS, &mut salted);
    let mac = |msg: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(&salted).expect("any key length");
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    };
    Keys {
        stored: Sha256::digest(mac(b"Client Key")).to_vec(),
        server: mac(b"Server Key"),
    }
}

/// How many messages account `i` (1-based) gets: an even share, the remainder to the first.
fn share(size: Size, i: u32) -> u32 {
    let base = size.messages / size.users.max(1);
    base + u32::from(i <= size.messages % size.users.max(1))
}

fn body(i: u32, j: u32) -> String {
    format!("Stored message {j} for {PREFIX}{i}: lorem ipsum dolor sit amet, consectetur.")
}

/// Seeds `server` (prepared, not running) unless it already was with this size. Returns the
/// time it took (zero when reused).
pub async fn ensure(server: &ServerDir, size: Size) -> Result<Duration, String> {
    let marker = server
        .dir
        .join(format!("seeded-{}-{}", size.users, size.messages));
    if marker.exists() {
        return Ok(Duration::ZERO);
    }
    let t0 = Instant::now();
    eprintln!(
        "  seeding {} with {} accounts and {} offline messages",
        server.kind.name(),
        size.users,
        size.messages
    );
    match server.kind {
        Kind::Franca => franca(server, size).await?,
        Kind::Prosody => {
            let data = server.dir.join("data");
            tokio::task::spawn_blocking(move || prosody_files(&data, size, 1..=size.users))
                .await
                .map_err(|e| e.to_string())??;
        }
        Kind::Ejabberd => ejabberd(server, size).await?,
    }
    std::fs::write(&marker, b"").map_err(|e| format!("marker: {e}"))?;
    eprintln!(
        "  seeded {} in {:.0} s",
        server.kind.name(),
        t0.elapsed().as_secs_f64()
    );
    Ok(t0.elapsed())
}

fn create(path: &Path) -> Result<std::io::BufWriter<std::fs::File>, String> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// XEP-0227 files, `PER_FILE` accounts each.
fn xep0227_files(dir: &Path, size: Size) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir: {e}"))?;
    let (k1, k256) = (keys_sha1(), keys_sha256());
    let creds = |mech: &str, k: &Keys| {
        format!(
            "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='{mech}'>\
             <iter-count>{ITERATIONS}</iter-count><salt>{}</salt><server-key>{}</server-key>\
             <stored-key>{}</stored-key></scram-credentials>",
            B64.encode(SALT),
            B64.encode(&k.server),
            B64.encode(&k.stored)
        )
    };
    let creds = format!(
        "{}{}",
        creds("SCRAM-SHA-1", &k1),
        creds("SCRAM-SHA-256", &k256)
    );
    let mut first = 1;
    while first <= size.users {
        let last = (first + PER_FILE - 1).min(size.users);
        let mut f = create(&dir.join(format!("part-{first:07}.xml")))?;
        let mut s = format!("<server-data xmlns='urn:xmpp:pie:0'><host jid='{DOMAIN}'>");
        for i in first..=last {
            let _ = write!(s, "<user name='{PREFIX}{i}'>{creds}");
            let n = share(size, i);
            if n > 0 {
                s.push_str("<offline-messages>");
                let from = i % size.users + 1;
                for j in 0..n {
                    let _ = write!(
                        s,
                        "<message xmlns='jabber:client' from='{PREFIX}{from}@{DOMAIN}/r' \
                         to='{PREFIX}{i}@{DOMAIN}' type='chat' id='m{j}'><body>{}</body>\
                         <delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>",
                        body(i, j)
                    );
                }
                s.push_str("</offline-messages>");
            }
            s.push_str("</user>");
        }
        s.push_str("</host></server-data>\n");
        f.write_all(s.as_bytes())
            .and_then(|()| f.flush())
            .map_err(|e| format!("write: {e}"))?;
        first = last + 1;
    }
    Ok(())
}

async fn franca(server: &ServerDir, size: Size) -> Result<(), String> {
    let export = server.dir.join("xep0227");
    let dir = export.clone();
    tokio::task::spawn_blocking(move || xep0227_files(&dir, size))
        .await
        .map_err(|e| e.to_string())??;
    let out = tokio::process::Command::new(&server.franca_bin)
        .arg("--config")
        .arg(server.dir.join("franca.toml"))
        .arg("import")
        .arg(&export)
        .output()
        .await
        .map_err(|e| format!("franca import: {e}"))?;
    let _ = std::fs::remove_dir_all(&export);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(&format!("imported {} account", size.users)) {
        return Err(format!(
            "franca import: {}{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Prosody's `internal` storage under `data` (its `data_path`) for accounts `users`:
/// `internal_hashed` accounts (SCRAM-SHA-1 keys in hex, the salt as a string) and the `offline`
/// archive store.
fn prosody_files(
    data: &Path,
    size: Size,
    users: std::ops::RangeInclusive<u32>,
) -> Result<(), String> {
    // Prosody escapes the host's dots in directory names.
    let host = data.join(DOMAIN.replace('.', "%2e"));
    let (accounts, offline) = (host.join("accounts"), host.join("offline"));
    for d in [&accounts, &offline] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir: {e}"))?;
    }
    let k = keys_sha1();
    let hex = |b: &[u8]| {
        b.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    };
    let salt = std::str::from_utf8(SALT).expect("an ASCII salt");
    let account = format!(
        "return {{\n\t[\"iteration_count\"] = {ITERATIONS};\n\t[\"salt\"] = \"{salt}\";\n\
         \t[\"server_key\"] = \"{}\";\n\t[\"stored_key\"] = \"{}\";\n}};\n",
        hex(&k.server),
        hex(&k.stored)
    );
    for i in users {
        std::fs::write(accounts.join(format!("{PREFIX}{i}.dat")), &account)
            .map_err(|e| format!("write: {e}"))?;
        let n = share(size, i);
        if n == 0 {
            continue;
        }
        let from = i % size.users + 1;
        let mut s = String::new();
        for j in 0..n {
            let _ = write!(
                s,
                "item({{\n\t[\"attr\"] = {{\n\t\t[\"from\"] = \"{PREFIX}{from}@{DOMAIN}/r\";\n\
                 \t\t[\"id\"] = \"m{j}\";\n\t\t[\"stamp\"] = \"2026-01-01T00:00:00Z\";\n\
                 \t\t[\"to\"] = \"{PREFIX}{i}@{DOMAIN}\";\n\t\t[\"type\"] = \"chat\";\n\
                 \t\t[\"xmlns\"] = \"jabber:client\";\n\t}};\n\t[\"key\"] = \"k{i}-{j}\";\n\
                 \t[\"name\"] = \"message\";\n\t[\"when\"] = 1767225600;\n\t[\"with\"] = \"\";\n\
                 \t[1] = {{\n\t\t[\"attr\"] = {{ }};\n\t\t[\"name\"] = \"body\";\n\
                 \t\t[1] = \"{}\";\n\t}};\n}});\n",
                body(i, j)
            );
        }
        std::fs::write(offline.join(format!("{PREFIX}{i}.list")), s)
            .map_err(|e| format!("write: {e}"))?;
    }
    Ok(())
}

async fn ejabberd(server: &ServerDir, size: Size) -> Result<(), String> {
    // ejabberdctl gives up on a command after a minute, so the import goes in parts, each its
    // own Prosody data directory.
    const PART: u32 = 2000;
    let export = server.dir.join("prosody-export");
    let dir = export.clone();
    let parts = tokio::task::spawn_blocking(move || {
        let mut parts = Vec::new();
        let mut first = 1;
        while first <= size.users {
            let last = (first + PART - 1).min(size.users);
            let part = dir.join(format!("part-{first:07}"));
            prosody_files(&part, size, first..=last)?;
            parts.push(part);
            first = last + 1;
        }
        Ok::<_, String>(parts)
    })
    .await
    .map_err(|e| e.to_string())??;
    server.chown_ejabberd()?;
    let t0 = Instant::now();
    let mut running = server.start()?;
    let result = async {
        running
            .wait_port(server.c2s, t0, Duration::from_secs(120))
            .await?;
        for part in &parts {
            let part = part.display().to_string();
            server.ejabberdctl(&["import_prosody", &part]).await?;
        }
        // import_prosody reports success even for files it could not read: count.
        let listed = server.ejabberdctl(&["registered_users", DOMAIN]).await?;
        let count = listed.lines().filter(|l| !l.trim().is_empty()).count();
        if count != size.users as usize {
            return Err(format!(
                "ejabberd import_prosody: {count} accounts imported, {} expected",
                size.users
            ));
        }
        Ok(())
    }
    .await;
    running.stop().await;
    let _ = std::fs::remove_dir_all(&export);
    result
}
