//! The archives of M6: `messages` 1:1 messages among `users` accounts, each account talking
//! with its `partners` ring neighbours (`n ± 1 ..= partners/2`), every message stored in both
//! parties' archives (so `2 × messages` archive rows, `2 × messages / users` per account),
//! oldest first, one every millisecond ending a day ago.
//!
//! They are bulk-loaded into each server's own archive table while it is stopped, outside
//! every timed window (sending a million messages through three servers would take most of
//! the window the benchmark has), as multi-row INSERTs in one transaction through the
//! `sqlite3` tool (`psql` for Franca on PostgreSQL):
//!
//! - Franca: `mam_messages` (migration 0004), ids of the shape its archive module makes and
//!   checks (`franca-im` `mam::id`: 26 base32hex characters of the µs time and 64 random bits);
//! - Prosody: mod_storage_sql's `prosodyarchive` (store `archive`, type `xml`, `when` in
//!   seconds, `with` the partner's bare JID);
//! - ejabberd: its `archive` table (`lite.sql`: `timestamp` in µs is the stanza id,
//!   `bare_peer` the partner).
//!
//! Every stored message is the same small chat stanza in all three, so the bytes per row
//! (database growth over rows) compare the stores, not the payloads.

use crate::server::{DOMAIN, Kind, ServerDir};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Stdio;
use std::time::Instant;

/// Account names of M6: `a1` … `aN`.
pub const PREFIX: &str = "a";

#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub users: u32,
    /// 1:1 messages; each is two archive rows.
    pub messages: u64,
    /// Conversation partners of each account (even; fewer than `users`).
    pub partners: u32,
}

impl Size {
    fn half(&self) -> u32 {
        (self.partners / 2).max(1)
    }

    /// Messages of one conversation.
    pub fn per_pair(&self) -> u64 {
        self.messages / (u64::from(self.users) * u64::from(self.half()))
    }

    /// Archive rows actually written (`messages` rounded down to whole conversations, twice).
    pub fn rows(&self) -> u64 {
        2 * self.per_pair() * u64::from(self.users) * u64::from(self.half())
    }

    pub fn check(&self) -> Result<(), String> {
        if self.users <= 2 * self.half() || self.per_pair() == 0 {
            return Err(format!(
                "M6 archive: {} accounts, {} partners and {} messages leave no whole \
                 conversations (need accounts > partners and messages ≥ accounts × partners/2)",
                self.users, self.partners, self.messages
            ));
        }
        Ok(())
    }
}

/// What the store holds after [`populate`].
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub rows: u64,
    /// Database growth (files, or relation size on PostgreSQL) over rows.
    pub bytes_per_row: f64,
    pub populate_s: f64,
}

/// One archived message: its number (global time order), sender, recipient and time.
#[derive(Debug, Clone, Copy)]
struct Msg {
    g: u64,
    from: u32,
    to: u32,
    stamp_us: i64,
}

/// Every message in time order: round `t` holds message `t` of every conversation, the sender
/// alternating between the two parties.
fn messages(size: Size, mut f: impl FnMut(Msg) -> Result<(), String>) -> Result<(), String> {
    let total = size.per_pair() * u64::from(size.users) * u64::from(size.half());
    let now_us = i64::try_from(crate::stats::now_ns() / 1000).unwrap_or(i64::MAX);
    let first_us = now_us - 86_400_000_000 - i64::try_from(total).unwrap_or(0) * 1000;
    let mut g = 0u64;
    for t in 0..size.per_pair() {
        for i in 1..=size.users {
            for d in 1..=size.half() {
                let j = (i - 1 + d) % size.users + 1;
                let (from, to) = if t % 2 == 0 { (i, j) } else { (j, i) };
                f(Msg {
                    g,
                    from,
                    to,
                    stamp_us: first_us + i64::try_from(g).unwrap_or(0) * 1000,
                })?;
                g += 1;
            }
        }
    }
    Ok(())
}

fn bare(n: u32) -> String {
    format!("{PREFIX}{n}@{DOMAIN}")
}

fn body(m: &Msg) -> String {
    format!(
        "Archived message {} from {PREFIX}{} to {PREFIX}{}: lorem ipsum dolor sit amet.",
        m.g, m.from, m.to
    )
}

/// The stanza as stored (double quotes, so it needs no escaping inside SQL strings).
fn stanza(m: &Msg) -> String {
    format!(
        "<message xmlns=\"jabber:client\" from=\"{}/r\" to=\"{}/r\" type=\"chat\" id=\"m{}\">\
         <body>{}</body></message>",
        bare(m.from),
        bare(m.to),
        m.g,
        body(m)
    )
}

/// Bytes of an SQLite database on disk (with its WAL, if any).
fn sqlite_bytes(db: &std::path::Path) -> u64 {
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    size(db.to_owned()) + size(wal.into())
}

/// Fills the archive of `server` (prepared, accounts provisioned, stopped). With `pg_url`,
/// Franca's store is that PostgreSQL database instead of its SQLite file.
pub async fn populate(
    server: &ServerDir,
    size: Size,
    pg_url: Option<&str>,
) -> Result<Stored, String> {
    size.check()?;
    let t0 = Instant::now();
    eprintln!(
        "  filling {}'s archive{}: {} messages among {} accounts ({} rows)",
        server.kind.name(),
        if pg_url.is_some() {
            " (PostgreSQL)"
        } else {
            ""
        },
        size.rows() / 2,
        size.users,
        size.rows()
    );
    let db = server.archive_db();
    let (before, after) = match (server.kind, pg_url) {
        (Kind::Franca, Some(url)) => {
            let before = pg_bytes(url).await?;
            let url2 = url.to_owned();
            tokio::task::spawn_blocking(move || {
                let mut psql = std::process::Command::new("psql");
                psql.args([&url2, "-q", "-v", "ON_ERROR_STOP=1"]);
                import(psql, Kind::Franca, size)
            })
            .await
            .map_err(|e| e.to_string())??;
            (before, pg_bytes(url).await?)
        }
        (kind, _) => {
            let before = sqlite_bytes(&db);
            let db2 = db.clone();
            tokio::task::spawn_blocking(move || {
                let mut sqlite3 = std::process::Command::new("sqlite3");
                sqlite3.arg(&db2);
                import(sqlite3, kind, size)
            })
            .await
            .map_err(|e| e.to_string())??;
            if kind == Kind::Ejabberd {
                server.chown_ejabberd()?;
            }
            (before, sqlite_bytes(&db))
        }
    };
    let rows = size.rows();
    let out = Stored {
        rows,
        bytes_per_row: after.saturating_sub(before) as f64 / rows.max(1) as f64,
        populate_s: t0.elapsed().as_secs_f64(),
    };
    eprintln!(
        "  filled in {:.0} s: {:.0} bytes per archived message",
        out.populate_s, out.bytes_per_row
    );
    Ok(out)
}

/// An id of the shape Franca's archive module makes (`franca-im` `mam::id`): the 128 bits of
/// the archiving time in µs (high 64) and 64 random bits, as 26 base32hex characters, so the
/// byte order is the time order. Franca refuses paging cursors of any other shape.
fn franca_id(stamp_us: i64, random: u64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let v = (u128::from(u64::try_from(stamp_us).unwrap_or(0)) << 64) | u128::from(random);
    (0..26)
        .rev()
        .map(|i| char::from(ALPHABET[((v >> (5 * i)) & 31) as usize]))
        .collect()
}

/// Refuses a PostgreSQL database that already holds archived messages (a second fill would
/// double the archive).
pub async fn check_empty_pg(url: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("psql")
        .args([
            url,
            "-tAc",
            "SELECT to_regclass('mam_messages') IS NOT NULL",
        ])
        .output()
        .await
        .map_err(|e| format!("psql: {e}"))?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "f" => Ok(()),
        "t" => Err(format!(
            "{url} already has Franca's tables; M6 on PostgreSQL needs an empty database"
        )),
        _ => Err(format!(
            "psql {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Relation size of Franca's archive table on PostgreSQL (0 before the table exists).
async fn pg_bytes(url: &str) -> Result<u64, String> {
    let out = tokio::process::Command::new("psql")
        .args([
            url,
            "-tAc",
            "SELECT COALESCE(pg_total_relation_size(to_regclass('mam_messages')), 0)",
        ])
        .output()
        .await
        .map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "psql: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("psql relation size: {e}"))
}

/// Writes the SQL values of one archive row: (message, owner, partner, into).
type RowWriter = fn(&Msg, u32, u32, &mut String);

/// The rows of `kind`'s archive table as multi-row INSERTs in one transaction, piped into
/// `tool` (`sqlite3 FILE` or `psql URL`).
fn import(mut tool: std::process::Command, kind: Kind, size: Size) -> Result<(), String> {
    let mut child = tool
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{tool:?}: {e}"))?;
    let mut stdin =
        std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().ok_or("tool stdin")?);
    let (head, per_row): (&str, RowWriter) = match kind {
        Kind::Franca => (
            "INSERT INTO mam_messages (owner, id, stamp_us, with_jid, outgoing, xml) VALUES ",
            |m, owner, with, s| {
                let _ = write!(
                    s,
                    "('{}','{}',{},'{}',{},'{}')",
                    bare(owner),
                    franca_id(m.stamp_us, rand::random()),
                    m.stamp_us,
                    bare(with),
                    u8::from(owner == m.from),
                    stanza(m)
                );
            },
        ),
        Kind::Prosody => (
            "INSERT INTO prosodyarchive (host, user, store, key, \"when\", \"with\", type, value) VALUES ",
            |m, owner, with, s| {
                let _ = write!(
                    s,
                    "('{DOMAIN}','{PREFIX}{owner}','archive','m{}-{owner}',{},'{}','xml','{}')",
                    m.g,
                    m.stamp_us / 1_000_000,
                    bare(with),
                    stanza(m)
                );
            },
        ),
        Kind::Ejabberd => (
            "INSERT INTO archive (username, timestamp, peer, bare_peer, xml, txt, kind, nick) VALUES ",
            |m, owner, with, s| {
                let _ = write!(
                    s,
                    "('{PREFIX}{owner}',{},'{}/r','{}','{}','{}','chat','')",
                    m.stamp_us,
                    bare(with),
                    bare(with),
                    stanza(m),
                    body(m)
                );
            },
        ),
    };
    const ROWS_PER_INSERT: usize = 500;
    let mut sql = String::from("BEGIN;\n");
    let mut in_stmt = 0usize;
    let written = messages(size, |m| {
        for (owner, with) in [(m.from, m.to), (m.to, m.from)] {
            sql.push_str(if in_stmt == 0 { head } else { "," });
            per_row(&m, owner, with, &mut sql);
            in_stmt += 1;
            if in_stmt == ROWS_PER_INSERT {
                sql.push_str(";\n");
                in_stmt = 0;
            }
        }
        if sql.len() > 1 << 20 {
            stdin
                .write_all(sql.as_bytes())
                .map_err(|e| format!("{tool:?} stdin: {e}"))?;
            sql.clear();
        }
        Ok(())
    });
    if in_stmt > 0 {
        sql.push_str(";\n");
    }
    sql.push_str("COMMIT;\n");
    let tail = stdin
        .write_all(sql.as_bytes())
        .and_then(|()| stdin.flush())
        .map_err(|e| format!("{tool:?} stdin: {e}"));
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{tool:?}: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !err.trim().is_empty() {
        return Err(format!("archive import {tool:?}: {} {err}", out.status));
    }
    written?;
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_in_time_order_between_ring_neighbours() {
        let size = Size {
            users: 11,
            messages: 110,
            partners: 4,
        };
        size.check().expect("valid size");
        assert_eq!(size.per_pair(), 5);
        assert_eq!(size.rows(), 220);
        let mut last = i64::MIN;
        let mut per_user = [0u32; 12];
        let mut pairs = std::collections::HashSet::new();
        messages(size, |m| {
            assert!(m.stamp_us > last);
            last = m.stamp_us;
            assert_ne!(m.from, m.to);
            let d = (m.to + 11 - m.from) % 11;
            assert!(matches!(d, 1 | 2 | 9 | 10), "{} → {}", m.from, m.to);
            per_user[m.from as usize] += 1;
            per_user[m.to as usize] += 1;
            pairs.insert((m.from.min(m.to), m.from.max(m.to)));
            Ok(())
        })
        .expect("generated");
        // Every account has 4 partners × 5 messages in its archive; 22 conversations.
        assert!(per_user[1..].iter().all(|&n| n == 20));
        assert_eq!(pairs.len(), 22);
        assert!(last < (crate::stats::now_ns() / 1000) as i64 - 86_000_000_000);
    }

    #[test]
    fn franca_ids_sort_by_time_in_franca_s_shape() {
        // The shape franca-im's mam::id::is_valid accepts: 26 base32hex characters, the
        // first at most '7' (128 bits).
        let a = franca_id(1_700_000_000_000_000, u64::MAX);
        let b = franca_id(1_700_000_000_000_001, 0);
        for id in [&a, &b] {
            assert_eq!(id.len(), 26);
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'v').contains(&c))
            );
            assert!(id.as_bytes()[0] <= b'7');
        }
        assert!(a < b);
        assert_eq!(franca_id(0, 0), "0".repeat(26));
        assert_eq!(franca_id(0, 31), format!("{}v", "0".repeat(25)));
    }

    #[test]
    fn sizes_without_whole_conversations_are_refused() {
        let small = |users, messages| Size {
            users,
            messages,
            partners: 10,
        };
        assert!(small(10, 10_000).check().is_err());
        assert!(small(1000, 4000).check().is_err());
        assert!(small(1000, 1_000_000).check().is_ok());
    }
}
