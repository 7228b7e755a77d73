//! XEP-0363 upload slots and stored files, shared by the two halves of HTTP file upload: the
//! `upload.<domain>` module in `franca-im` hands slots out, and the HTTP routes in `franca-net`
//! accept the PUT and serve the GET. Both reach this one registry through [`Server::uploads`],
//! so neither crate depends on the other (ARCHITECTURE dependency rules).
//!
//! Slots waiting for their PUT live in memory only (a restart forgets them; the client asks
//! again). A stored file is `data_dir/upload/<id>` with its description beside it in
//! `<id>.meta` (owner, size, content type, file name, upload time); the per-account byte count
//! for the quota is rebuilt from those files at start, so it is as durable as the files are.
//!
//! [`Server::uploads`]: crate::Server::uploads

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most slots waiting for a PUT at once, all accounts together.
pub const MAX_PENDING_SLOTS: usize = 10_000;

/// A slot handed out and not yet used.
#[derive(Debug, Clone)]
pub struct Slot {
    /// 128 random bits, hex: the unguessable part of the URL.
    pub id: String,
    /// Another 128 random bits, hex, required in the PUT's `Authorization` header.
    pub secret: String,
    /// Bare JID of the requester, charged for the bytes.
    pub owner: String,
    pub filename: String,
    pub size: u64,
    pub content_type: String,
    pub expires: Instant,
}

/// A stored file's description (the `.meta` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub owner: String,
    pub size: u64,
    pub content_type: String,
    pub filename: String,
    /// Seconds since the Unix epoch.
    pub uploaded: u64,
}

impl StoredFile {
    fn encode(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n",
            self.owner, self.size, self.content_type, self.filename, self.uploaded
        )
    }

    fn decode(s: &str) -> Option<StoredFile> {
        let mut l = s.lines();
        Some(StoredFile {
            owner: l.next()?.to_owned(),
            size: l.next()?.parse().ok()?,
            content_type: l.next()?.to_owned(),
            filename: l.next()?.to_owned(),
            uploaded: l.next()?.parse().ok()?,
        })
    }
}

/// Why a slot cannot be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotRefusal {
    /// The account would go over `upload.quota_per_user`.
    Quota,
    /// Too many slots are waiting.
    Busy,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Slot>,
    /// Bytes per owner: stored files plus pending slots.
    usage: HashMap<String, u64>,
}

/// The registry: pending slots and the per-account byte count.
pub struct Uploads {
    dir: PathBuf,
    state: Mutex<State>,
}

/// Whether `id` is shaped like one of ours (32 lowercase hex digits), so it is safe in a path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// RFC 3986 percent-encoding of a path segment: everything but the unreserved characters.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Compare secrets without an early exit, so timing tells nothing of how much matched.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Uploads {
    /// A registry keeping files in `data_dir/upload`; nothing is read until [`Uploads::load`].
    pub fn new(data_dir: &Path) -> Uploads {
        Uploads {
            dir: data_dir.join("upload"),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Create the directory and count the stored bytes of every owner.
    pub async fn load(&self) -> std::io::Result<()> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let mut usage: HashMap<String, u64> = HashMap::new();
        let mut rd = tokio::fs::read_dir(&self.dir).await?;
        while let Some(e) = rd.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".meta")
                && let Some(m) = self.meta(id).await
            {
                *usage.entry(m.owner).or_default() += m.size;
            } else if name.ends_with(".part") {
                // A PUT cut off by a restart.
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
        let mut st = self.state();
        for (owner, bytes) in usage {
            *st.usage.entry(owner).or_default() += bytes;
        }
        Ok(())
    }

    /// Bytes `owner` has stored or reserved.
    pub fn usage(&self, owner: &str) -> u64 {
        self.state().usage.get(owner).copied().unwrap_or(0)
    }

    /// Reserve `slot`, refusing it when its owner would pass `quota` (0 = none).
    pub fn add_slot(&self, slot: Slot, quota: u64) -> Result<(), SlotRefusal> {
        let mut st = self.state();
        let now = Instant::now();
        Self::expire_locked(&mut st, now);
        if st.pending.len() >= MAX_PENDING_SLOTS {
            return Err(SlotRefusal::Busy);
        }
        let used = st.usage.get(&slot.owner).copied().unwrap_or(0);
        if quota > 0 && used.saturating_add(slot.size) > quota {
            return Err(SlotRefusal::Quota);
        }
        *st.usage.entry(slot.owner.clone()).or_default() += slot.size;
        st.pending.insert(slot.id.clone(), slot);
        Ok(())
    }

    fn release(st: &mut State, owner: &str, bytes: u64) {
        if let Some(u) = st.usage.get_mut(owner) {
            *u = u.saturating_sub(bytes);
            if *u == 0 {
                st.usage.remove(owner);
            }
        }
    }

    fn expire_locked(st: &mut State, now: Instant) {
        let gone: Vec<Slot> = st
            .pending
            .values()
            .filter(|s| s.expires <= now)
            .cloned()
            .collect();
        for s in gone {
            st.pending.remove(&s.id);
            Self::release(st, &s.owner, s.size);
        }
    }

    /// Take the live slot `id` out for a PUT (so two PUTs cannot race for it).
    pub fn take_slot(&self, id: &str) -> Option<Slot> {
        let mut st = self.state();
        Self::expire_locked(&mut st, Instant::now());
        st.pending.remove(id)
    }

    /// Put a slot back after a PUT that failed (the client may try again until it expires).
    pub fn return_slot(&self, slot: Slot) {
        let mut st = self.state();
        if slot.expires > Instant::now() {
            st.pending.insert(slot.id.clone(), slot);
        } else {
            Self::release(&mut st, &slot.owner, slot.size);
        }
    }

    /// Where the bytes of `id` go while being written, and once complete.
    pub fn part_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }
    pub fn file_path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The slot's PUT completed into [`Uploads::part_path`]: write its description and move
    /// the file into place (the reservation becomes stored bytes).
    pub async fn complete(&self, slot: &Slot) -> std::io::Result<()> {
        let meta = StoredFile {
            owner: slot.owner.clone(),
            size: slot.size,
            content_type: slot.content_type.clone(),
            filename: slot.filename.clone(),
            uploaded: now_secs(),
        };
        tokio::fs::write(self.dir.join(format!("{}.meta", slot.id)), meta.encode()).await?;
        tokio::fs::rename(self.part_path(&slot.id), self.file_path(&slot.id)).await
    }

    /// The description of stored file `id`, if there is one.
    pub async fn meta(&self, id: &str) -> Option<StoredFile> {
        if !valid_id(id) {
            return None;
        }
        let path = self.dir.join(format!("{id}.meta"));
        let raw = tokio::fs::read(&path).await.ok()?;
        if raw.len() > 8192 {
            return None;
        }
        StoredFile::decode(std::str::from_utf8(&raw).ok()?)
    }

    /// Forget expired slots and remove files older than `retention` (None: keep them).
    /// Returns how many files were removed.
    pub async fn clean(&self, retention: Option<Duration>) -> usize {
        self.expire_locked_now();
        let Some(retention) = retention else {
            return 0;
        };
        let cutoff = now_secs().saturating_sub(retention.as_secs());
        let Ok(mut rd) = tokio::fs::read_dir(&self.dir).await else {
            return 0;
        };
        let mut removed = 0;
        while let Ok(Some(e)) = rd.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".meta") else {
                continue;
            };
            let Some(m) = self.meta(id).await else {
                continue;
            };
            if m.uploaded > cutoff {
                continue;
            }
            let _ = tokio::fs::remove_file(self.file_path(id)).await;
            if tokio::fs::remove_file(e.path()).await.is_ok() {
                Self::release(&mut self.state(), &m.owner, m.size);
                removed += 1;
            }
        }
        removed
    }

    fn expire_locked_now(&self) {
        Self::expire_locked(&mut self.state(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: &str, size: u64, secs: u64) -> Slot {
        Slot {
            id: id.into(),
            secret: "s".into(),
            owner: "a@x".into(),
            filename: "f.txt".into(),
            size,
            content_type: "text/plain".into(),
            expires: Instant::now() + Duration::from_secs(secs),
        }
    }

    #[test]
    fn quota_reserves_and_expiry_releases() {
        let u = Uploads::new(Path::new("/nonexistent"));
        u.add_slot(slot("1", 60, 60), 100).expect("fits");
        assert_eq!(u.add_slot(slot("2", 60, 60), 100), Err(SlotRefusal::Quota));
        let s = u.take_slot("1").expect("live");
        u.return_slot(s);
        assert_eq!(u.usage("a@x"), 60);
        u.add_slot(slot("3", 10, 0), 100).expect("fits");
        assert!(u.take_slot("3").is_none(), "expired");
        assert_eq!(u.usage("a@x"), 60);
    }

    #[test]
    fn upload_config_is_checked() {
        use crate::Config;
        let parse = |t: &str| Config::from_toml(t, Path::new("t.toml"));
        assert!(parse("[upload]\nmax_file_size = 10\n").is_ok());
        for bad in [
            "[upload]\nsubdomain = \"conference\"\n",
            "[upload]\nsubdomain = \"Up\"\n",
            "[upload]\nmax_file_size = 0\n",
            "[upload]\npublic_url = \"ftp://x\"\n",
            "[server]\ndomains = [\"a.org\", \"upload.a.org\"]\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let mut c = crate::config::UploadConfig::default();
        assert!(c.content_type_allowed("image/png"));
        assert!(!c.content_type_allowed("Text/HTML; charset=utf-8"));
        c.allowed_content_types = vec!["image/*".into()];
        assert!(c.content_type_allowed("image/jpeg") && !c.content_type_allowed("video/mp4"));
    }

    #[test]
    fn ids_and_secrets() {
        assert!(valid_id("0123456789abcdef0123456789abcdef"));
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id("0123456789ABCDEF0123456789abcdef"));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
        let m = StoredFile {
            owner: "a@x".into(),
            size: 3,
            content_type: "image/png".into(),
            filename: "a b.png".into(),
            uploaded: 9,
        };
        assert_eq!(StoredFile::decode(&m.encode()), Some(m));
    }
}
