//! SASL client side: PLAIN and SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, RFC 7677), without
//! channel binding (`n,,`), with the client's SaltedPassword cached per (user, salt, iterations)
//! the way real clients cache it, so the generator's core is not spent on PBKDF2.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// A mechanism the generator can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mech {
    Plain,
    ScramSha1,
    ScramSha256,
}

impl Mech {
    pub fn name(self) -> &'static str {
        match self {
            Mech::Plain => "PLAIN",
            Mech::ScramSha1 => "SCRAM-SHA-1",
            Mech::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    pub fn parse(s: &str) -> Option<Mech> {
        [Mech::Plain, Mech::ScramSha1, Mech::ScramSha256]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }
}

/// The PLAIN initial response (base64 of `\0user\0password`).
pub fn plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

/// SaltedPassword values already derived, shared by every connection of a worker and
/// persisted between runs in a small text file.
#[derive(Debug, Default)]
pub struct ScramCache {
    map: Mutex<HashMap<String, Vec<u8>>>,
    fresh: Mutex<Vec<String>>,
}

impl ScramCache {
    /// Loads `path` if it exists (lines: `key salted_b64`).
    pub fn load(path: Option<&Path>) -> ScramCache {
        let cache = ScramCache::default();
        if let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) {
            let mut map = cache.map.lock().unwrap_or_else(|e| e.into_inner());
            for line in text.lines() {
                if let Some((k, v)) = line.rsplit_once(' ')
                    && let Ok(v) = B64.decode(v)
                {
                    map.insert(k.to_owned(), v);
                }
            }
        }
        cache
    }

    /// Appends the entries derived since [`ScramCache::load`] to `path`.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let fresh = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|e| e.into_inner()));
        if fresh.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(fresh.concat().as_bytes())
    }

    fn salted(&self, mech: Mech, user: &str, password: &str, salt: &[u8], iters: u32) -> Vec<u8> {
        let key = format!("{} {user} {} {iters}", mech.name(), B64.encode(salt));
        if let Some(v) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return v.clone();
        }
        let v = match mech {
            Mech::ScramSha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, iters, &mut out);
                out.to_vec()
            }
            _ => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iters, &mut out);
                out.to_vec()
            }
        };
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{key} {}\n", B64.encode(&v)));
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, v.clone());
        v
    }
}

/// One SCRAM exchange in progress.
#[derive(Debug)]
pub struct Scram {
    mech: Mech,
    user: String,
    password: String,
    client_first_bare: String,
    server_signature: Vec<u8>,
}

fn hmac(mech: Mech, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mech {
        Mech::ScramSha1 => {
            let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m =
                <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(mech: Mech, data: &[u8]) -> Vec<u8> {
    match mech {
        Mech::ScramSha1 => Sha1::digest(data).to_vec(),
        _ => Sha256::digest(data).to_vec(),
    }
}

fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl Scram {
    /// Starts an exchange; returns it and the base64 client-first message.
    pub fn start(mech: Mech, user: &str, password: &str) -> (Scram, String) {
        let nonce: [u8; 18] = rand::random();
        let client_first_bare = format!("n={},r={}", saslname(user), B64.encode(nonce));
        let msg = B64.encode(format!("n,,{client_first_bare}"));
        (
            Scram {
                mech,
                user: user.to_owned(),
                password: password.to_owned(),
                client_first_bare,
                server_signature: Vec::new(),
            },
            msg,
        )
    }

    /// Answers the server-first challenge (base64) with the client-final message (base64).
    pub fn respond(&mut self, challenge_b64: &[u8], cache: &ScramCache) -> Result<String, String> {
        let server_first = B64
            .decode(challenge_b64)
            .map_err(|e| format!("challenge is not base64: {e}"))?;
        let server_first =
            String::from_utf8(server_first).map_err(|_| "challenge is not UTF-8".to_owned())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iters = None;
        for part in server_first.split(',') {
            if let Some(v) = part.strip_prefix("r=") {
                nonce = Some(v.to_owned());
            } else if let Some(v) = part.strip_prefix("s=") {
                salt = B64.decode(v).ok();
            } else if let Some(v) = part.strip_prefix("i=") {
                iters = v.parse::<u32>().ok();
            }
        }
        let (Some(nonce), Some(salt), Some(iters)) = (nonce, salt, iters) else {
            return Err(format!("bad server-first message: {server_first}"));
        };
        let salted = cache.salted(self.mech, &self.user, &self.password, &salt, iters);
        let client_key = hmac(self.mech, &salted, b"Client Key");
        let stored_key = hash(self.mech, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(self.mech, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(self.mech, &salted, b"Server Key");
        self.server_signature = hmac(self.mech, &server_key, auth_message.as_bytes());
        Ok(B64.encode(format!("{without_proof},p={}", B64.encode(proof))))
    }

    /// Checks the `v=` server signature carried by `<success/>` (base64), if any.
    pub fn verify(&self, success_b64: &[u8]) -> Result<(), String> {
        if success_b64.is_empty() {
            return Ok(()); // some servers send it as a separate challenge; not checked then
        }
        let text = B64
            .decode(success_b64)
            .map_err(|e| format!("success data is not base64: {e}"))?;
        let text = String::from_utf8_lossy(&text);
        match text.strip_prefix("v=").map(|v| B64.decode(v.trim())) {
            Some(Ok(v)) if v == self.server_signature => Ok(()),
            _ => Err(format!("server signature mismatch: {text}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3 test vector.
    #[test]
    fn rfc7677_vector() {
        let cache = ScramCache::default();
        let mut s = Scram {
            mech: Mech::ScramSha256,
            user: "user".into(),
            password: "pencil".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_signature: Vec::new(),
        };
        let sf = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let out = s
            .respond(B64.encode(sf).as_bytes(), &cache)
            .expect("respond");
        let out = String::from_utf8(B64.decode(out).expect("b64")).expect("utf8");
        assert_eq!(
            out,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let v = B64.encode("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert!(s.verify(v.as_bytes()).is_ok());
    }
}
