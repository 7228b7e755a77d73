//! SCRAM server (RFC 5802 §3, §5, §7; RFC 7677; draft-melnikov-scram-sha-512) with channel
//! binding (RFC 5802 §6) and XEP-0474 downgrade protection.

use std::fmt;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use precis_profiles::OpaqueString;
use precis_profiles::precis_core::profile::PrecisFastInvocation;
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

use super::cb::ChannelBinding;
use super::{Mechanism, SaslError};

/// Salt length for new credentials and for the fake salts of unknown users.
pub const DEFAULT_SALT_LEN: usize = 16;

/// Upper bound on one SCRAM message. Real messages are a few hundred bytes (a username is at
/// most 1023 bytes, escaped ×3); the stream reader bounds stanzas anyway.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// Server nonce bytes (base64: 32 printable characters).
const SERVER_NONCE_BYTES: usize = 24;

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SHA-1 (RFC 5802).
    Sha1,
    /// SHA-256 (RFC 7677).
    Sha256,
    /// SHA-512 (draft-melnikov-scram-sha-512).
    Sha512,
}

macro_rules! hmac_with {
    ($d:ty, $key:expr, $data:expr) => {{
        // HMAC accepts keys of any length (RFC 2104 §2), so this cannot fail.
        #[allow(clippy::expect_used)]
        let mut m = <Hmac<$d> as Mac>::new_from_slice($key).expect("HMAC takes any key length");
        m.update($data);
        m.finalize().into_bytes().to_vec()
    }};
}

impl ScramHash {
    /// The hash name as used in the mechanism name: "SHA-1", "SHA-256", "SHA-512".
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
            ScramHash::Sha512 => "SHA-512",
        }
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }

    /// The iteration count given to new credentials.
    ///
    /// 4096 for SHA-1 and SHA-256: the minimum RFC 7677 §4 asks for, and what ejabberd
    /// (`SCRAM_DEFAULT_ITERATION_COUNT`) and Prosody's `mod_auth_internal_hashed` use, so that
    /// clients caching SaltedPassword (and mobile clients doing 4096 rounds in ~0.5 s) behave as
    /// with those servers. 10000 for SHA-512: draft-melnikov-scram-sha-512 asks servers to
    /// announce at least 10000 for it; SCRAM-SHA-512 clients are new enough to expect that.
    pub fn default_iterations(self) -> u32 {
        match self {
            ScramHash::Sha1 | ScramHash::Sha256 => 4096,
            ScramHash::Sha512 => 10000,
        }
    }

    /// H(data).
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// HMAC(key, data).
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => hmac_with!(Sha1, key, data),
            ScramHash::Sha256 => hmac_with!(Sha256, key, data),
            ScramHash::Sha512 => hmac_with!(Sha512, key, data),
        }
    }

    /// Hi(password, salt, i) = PBKDF2-HMAC(password, salt, i, output_len) (RFC 5802 §2.2).
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

/// Stored SCRAM credentials for one account and one hash (RFC 5802 §3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// The hash these keys belong to.
    pub hash: ScramHash,
    /// The salt.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// StoredKey = H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys are password-equivalent for impersonating the server: keep them out of logs.
        f.debug_struct("ScramKeys")
            .field("hash", &self.hash)
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Prepares a password with the RFC 8265 §4.2 `OpaqueString` profile (the PRECIS successor of
/// SASLprep, RFC 4013). `None` when the profile rejects it (empty, control characters, …): a
/// registration or password change must refuse such a password.
pub fn prepare_password(password: &str) -> Option<String> {
    OpaqueString::enforce(password).ok().map(|c| c.into_owned())
}

/// Derives the stored keys from a password (RFC 5802 §3).
///
/// The password is prepared with [`prepare_password`]. A password the profile rejects is used
/// as its raw UTF-8 bytes instead (what most SCRAM clients do when SASLprep fails), so a legacy
/// account keeps working; new passwords should be checked with [`prepare_password`] first.
/// For ASCII passwords `OpaqueString` and SASLprep give the same bytes; they differ only in
/// rare cases (SASLprep uses NFKC and deletes some characters, OpaqueString uses NFC).
pub fn derive_keys(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
    let prepared = prepare_password(password);
    let pw = prepared.as_deref().unwrap_or(password);
    let salted = hash.hi(pw.as_bytes(), salt, iterations);
    let client_key = hash.hmac(&salted, b"Client Key");
    ScramKeys {
        hash,
        salt: salt.to_vec(),
        iterations,
        stored_key: hash.hash(&client_key),
        server_key: hash.hmac(&salted, b"Server Key"),
    }
}

/// New credentials with a random [`DEFAULT_SALT_LEN`]-byte salt and the hash's
/// [`ScramHash::default_iterations`].
pub fn new_keys(hash: ScramHash, password: &str) -> ScramKeys {
    let mut salt = vec![0u8; DEFAULT_SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    derive_keys(hash, password, &salt, hash.default_iterations())
}

/// The XEP-0474 §4.1 input string S: the advertised SASL mechanisms sorted (i;octet) and
/// joined by U+001E, then — only when channel-binding types were advertised with XEP-0440 —
/// U+001F and the sorted types joined by U+001E. Compute it from exactly what was put in the
/// stream features and pass it to [`ScramServer::new`], which hashes it with the mechanism's
/// hash and sends it as the `h` attribute of the server-first-message.
pub fn ssdp_value(mechs: &[&str], cb_types: &[&str]) -> String {
    let mut m: Vec<&str> = mechs.to_vec();
    m.sort_unstable();
    let mut s = m.join("\u{1e}");
    if !cb_types.is_empty() {
        let mut c: Vec<&str> = cb_types.to_vec();
        c.sort_unstable();
        s.push('\u{1f}');
        s.push_str(&c.join("\u{1e}"));
    }
    s
}

/// base64(H(S)) — the value of the XEP-0474 `h` attribute.
pub fn ssdp_hash(hash: ScramHash, ssdp: &str) -> String {
    B64.encode(hash.hash(ssdp.as_bytes()))
}

/// What the client-first-message told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The authentication identity (decoded saslname, not yet normalised: the caller applies
    /// [`crate::jidprep`] rules when looking the account up).
    pub username: String,
    /// The authorization identity, if the client sent one; check it with
    /// [`super::check_authzid`].
    pub authzid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CbFlag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    Yes,
    /// `p=type`: the client requires it.
    Required(String),
}

enum State {
    Start,
    GotClientFirst {
        gs2_header: String,
        cb_data: Vec<u8>,
        client_first_bare: String,
        client_nonce: String,
    },
    SentServerFirst {
        gs2_header: String,
        cb_data: Vec<u8>,
        auth_message_prefix: String,
        nonce: String,
        keys: ScramKeys,
        known_user: bool,
    },
    Done,
    Failed,
}

/// Server side of one SCRAM exchange.
///
/// ```text
/// client_first(data)  -> username (look the account up, async)
/// server_first(keys)  -> challenge bytes
/// client_final(data)  -> server-final-message bytes (send in <success/>)
/// ```
/// Any error ends the exchange; the state machine then refuses further steps.
pub struct ScramServer {
    mech: Mechanism,
    hash: ScramHash,
    cb: ChannelBinding,
    tls: bool,
    ssdp: Option<String>,
    identity: Option<ClientFirst>,
    state: State,
    fixed_nonce: Option<String>,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("mech", &self.mech)
            .field("tls", &self.tls)
            .field("cb_types", &self.cb.types())
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// A new exchange for `mech` on a connection with the given channel-binding data.
    ///
    /// `tls` tells whether the connection is encrypted; -PLUS mechanisms count as offered when
    /// `tls` is true and `cb` has at least one type — the stream features must agree (use
    /// [`ChannelBinding::types`] for both the mechanism list and XEP-0440). `ssdp` is the
    /// [`ssdp_value`] of what was advertised, or `None` to not send the XEP-0474 attribute.
    ///
    /// Fails with [`SaslError::InvalidMechanism`] for PLAIN, and with
    /// [`SaslError::EncryptionRequired`] for a -PLUS mechanism without TLS.
    pub fn new(
        mech: Mechanism,
        cb: ChannelBinding,
        tls: bool,
        ssdp: Option<String>,
    ) -> Result<ScramServer, SaslError> {
        let hash = mech.hash().ok_or(SaslError::InvalidMechanism)?;
        if mech.is_plus() && !tls {
            return Err(SaslError::EncryptionRequired);
        }
        Ok(ScramServer {
            mech,
            hash,
            cb: if tls { cb } else { ChannelBinding::none() },
            tls,
            ssdp,
            identity: None,
            state: State::Start,
            fixed_nonce: None,
        })
    }

    /// Test-only: a server whose nonce part is fixed, to replay published exchanges.
    #[cfg(test)]
    pub(crate) fn with_fixed_nonce(mut self, nonce: &str) -> ScramServer {
        self.fixed_nonce = Some(nonce.to_owned());
        self
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// The identity from the client-first-message, once parsed.
    pub fn identity(&self) -> Option<&ClientFirst> {
        self.identity.as_ref()
    }

    /// True after [`ScramServer::client_final`] succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn offers_plus(&self) -> bool {
        self.tls && !self.cb.is_empty()
    }

    fn fail(&mut self, e: SaslError) -> SaslError {
        self.state = State::Failed;
        e
    }

    /// Step 1: parse the client-first-message (RFC 5802 §7 `client-first-message`).
    ///
    /// Checks the GS2 header against the mechanism and what we offer (RFC 5802 §6):
    /// `p=` only with -PLUS and only for a type we have; -PLUS requires `p=`; `y` while we
    /// offer -PLUS is a downgrade; the reserved `m=` extension is refused.
    pub fn client_first(&mut self, data: &[u8]) -> Result<ClientFirst, SaslError> {
        if !matches!(self.state, State::Start) {
            return Err(self.fail(SaslError::MalformedRequest("unexpected client-first")));
        }
        match self.parse_client_first(data) {
            Ok((identity, state)) => {
                self.identity = Some(identity.clone());
                self.state = state;
                Ok(identity)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn parse_client_first(&self, data: &[u8]) -> Result<(ClientFirst, State), SaslError> {
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(SaslError::MalformedRequest("message too long"));
        }
        let msg =
            std::str::from_utf8(data).map_err(|_| SaslError::MalformedRequest("not UTF-8"))?;
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(SaslError::MalformedRequest("no GS2 header"))?;
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(SaslError::MalformedRequest("no GS2 header"))?;
        let gs2_header = &msg[..flag.len() + authzid.len() + 2];

        let flag = match flag {
            "n" => CbFlag::No,
            "y" => CbFlag::Yes,
            f => match f.strip_prefix("p=") {
                Some(name) if is_cb_name(name) => CbFlag::Required(name.to_owned()),
                _ => return Err(SaslError::MalformedRequest("bad GS2 channel-binding flag")),
            },
        };
        let authzid = if authzid.is_empty() {
            None
        } else {
            let a = authzid
                .strip_prefix("a=")
                .ok_or(SaslError::MalformedRequest("bad authzid"))?;
            Some(decode_saslname(a)?)
        };

        let cb_data = match (&flag, self.mech.is_plus()) {
            (CbFlag::Required(name), true) => {
                let d = self
                    .cb
                    .data(name)
                    .ok_or(SaslError::UnsupportedChannelBinding)?;
                d.to_vec()
            }
            (CbFlag::Required(_), false) => {
                return Err(SaslError::MalformedRequest(
                    "channel binding requested with a non-PLUS mechanism",
                ));
            }
            (_, true) => {
                return Err(SaslError::MalformedRequest(
                    "PLUS mechanism without channel binding",
                ));
            }
            (CbFlag::Yes, false) if self.offers_plus() => {
                return Err(SaslError::ChannelBindingDowngrade);
            }
            _ => Vec::new(),
        };

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut attrs = bare.split(',');
        let first = attrs.next().unwrap_or_default();
        if first.starts_with("m=") {
            return Err(SaslError::MalformedRequest(
                "mandatory extension not supported",
            ));
        }
        let username = first
            .strip_prefix("n=")
            .ok_or(SaslError::MalformedRequest("no username"))?;
        let username = decode_saslname(username)?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::MalformedRequest("no nonce"))?;
        if !is_printable_nonce(nonce) {
            return Err(SaslError::MalformedRequest("bad nonce"));
        }
        for ext in attrs {
            if !is_attr_val(ext) {
                return Err(SaslError::MalformedRequest("bad extension"));
            }
        }
        let identity = ClientFirst { username, authzid };
        Ok((
            identity,
            State::GotClientFirst {
                gs2_header: gs2_header.to_owned(),
                cb_data,
                client_first_bare: bare.to_owned(),
                client_nonce: nonce.to_owned(),
            },
        ))
    }

    /// Step 2: the server-first-message (RFC 5802 §7 `server-first-message`), with the XEP-0474
    /// `h` attribute when an SSDP value was given.
    ///
    /// Pass the account's keys for this mechanism's hash, or `None` when the account does not
    /// exist (or has no keys for this hash): the exchange then continues with a salt derived
    /// deterministically from the username, so the challenge looks the same as for a real
    /// account, and fails in [`ScramServer::client_final`] with `not-authorized`.
    pub fn server_first(&mut self, keys: Option<ScramKeys>) -> Result<Vec<u8>, SaslError> {
        let State::GotClientFirst {
            gs2_header,
            cb_data,
            client_first_bare,
            client_nonce,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(SaslError::MalformedRequest("unexpected server-first"));
        };
        let username = self
            .identity
            .as_ref()
            .map(|i| i.username.as_str())
            .unwrap_or_default();
        let (keys, known_user) = match keys {
            Some(k) if k.hash == self.hash && k.iterations > 0 && !k.salt.is_empty() => (k, true),
            _ => (fake_keys(self.hash, username), false),
        };
        let server_nonce = match &self.fixed_nonce {
            Some(n) => n.clone(),
            None => {
                let mut b = [0u8; SERVER_NONCE_BYTES];
                rand::thread_rng().fill_bytes(&mut b);
                B64.encode(b)
            }
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let mut server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        if let Some(s) = &self.ssdp {
            server_first.push_str(",h=");
            server_first.push_str(&ssdp_hash(self.hash, s));
        }
        let out = server_first.clone().into_bytes();
        self.state = State::SentServerFirst {
            gs2_header,
            cb_data,
            auth_message_prefix: format!("{client_first_bare},{server_first},"),
            nonce,
            keys,
            known_user,
        };
        Ok(out)
    }

    /// Step 3: verify the client-final-message (RFC 5802 §7 `client-final-message`) — the
    /// channel-binding input, the nonce and the proof (all in constant time) — and return the
    /// server-final-message `v=ServerSignature` to send with `<success/>`.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, SaslError> {
        let State::SentServerFirst {
            gs2_header,
            cb_data,
            auth_message_prefix,
            nonce,
            keys,
            known_user,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(SaslError::MalformedRequest("unexpected client-final"));
        };
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(SaslError::MalformedRequest("message too long"));
        }
        let msg =
            std::str::from_utf8(data).map_err(|_| SaslError::MalformedRequest("not UTF-8"))?;
        let parsed = parse_client_final(msg)?;

        // c= must be base64(gs2-header || cb-data) (RFC 5802 §7 `cbind-input`).
        let mut expected_cbind = gs2_header.into_bytes();
        expected_cbind.extend_from_slice(&cb_data);
        let cb_ok = ct_eq(&parsed.cbind_input, &expected_cbind);
        let nonce_ok = ct_eq(parsed.nonce.as_bytes(), nonce.as_bytes());
        if !bool::from(nonce_ok) {
            return Err(SaslError::MalformedRequest("nonce mismatch"));
        }
        if !bool::from(cb_ok) {
            return Err(SaslError::ChannelBindingMismatch);
        }

        let auth_message = format!("{auth_message_prefix}{}", parsed.without_proof);
        let client_signature = self.hash.hmac(&keys.stored_key, auth_message.as_bytes());
        if parsed.proof.len() != client_signature.len() {
            return Err(SaslError::NotAuthorized);
        }
        let client_key: Vec<u8> = parsed
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let proof_ok = ct_eq(&self.hash.hash(&client_key), &keys.stored_key);
        let ok = proof_ok & Choice::from(u8::from(known_user));
        if !bool::from(ok) {
            return Err(SaslError::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&keys.server_key, auth_message.as_bytes());
        self.state = State::Done;
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

struct ClientFinal<'a> {
    cbind_input: Vec<u8>,
    nonce: &'a str,
    without_proof: &'a str,
    proof: Vec<u8>,
}

/// client-final-message = channel-binding "," nonce ["," extensions] "," proof
fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, SaslError> {
    let (without_proof, proof) = msg
        .rsplit_once(',')
        .ok_or(SaslError::MalformedRequest("client-final too short"))?;
    let proof = proof
        .strip_prefix("p=")
        .ok_or(SaslError::MalformedRequest("proof missing or not last"))?;
    let proof = B64
        .decode(proof)
        .map_err(|_| SaslError::MalformedRequest("proof not base64"))?;
    let mut attrs = without_proof.split(',');
    let cbind = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(SaslError::MalformedRequest("no channel-binding attribute"))?;
    let cbind_input = B64
        .decode(cbind)
        .map_err(|_| SaslError::MalformedRequest("channel binding not base64"))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(SaslError::MalformedRequest("no nonce"))?;
    for ext in attrs {
        if !is_attr_val(ext) || ext.starts_with("p=") {
            return Err(SaslError::MalformedRequest("bad extension"));
        }
    }
    Ok(ClientFinal {
        cbind_input,
        nonce,
        without_proof,
        proof,
    })
}

fn ct_eq(a: &[u8], b: &[u8]) -> Choice {
    // Lengths are not secret; `ct_eq` on slices of different lengths returns false.
    a.ct_eq(b)
}

/// saslname = 1*(value-safe-char / "=2C" / "=3D") (RFC 5802 §7).
fn decode_saslname(s: &str) -> Result<String, SaslError> {
    if s.is_empty() {
        return Err(SaslError::MalformedRequest("empty saslname"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['=', '\0']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = t;
        } else {
            return Err(SaslError::MalformedRequest("bad saslname escape"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// cb-name = 1*(ALPHA / DIGIT / "." / "-") (RFC 5802 §7).
fn is_cb_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// printable = %x21-2B / %x2D-7E (RFC 5802 §7).
fn is_printable_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// attr-val = ALPHA "=" value (RFC 5802 §7).
fn is_attr_val(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'='
}

/// A per-process secret for the fake salts of unknown users.
fn fake_salt_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        k
    })
}

/// Keys for an account that does not exist: the salt is HMAC(secret, hash ‖ username), stable
/// for the life of the process so repeated probes see the same salt as for a real account;
/// the stored key is random so no proof can match (and `known_user` is false anyway).
fn fake_keys(hash: ScramHash, username: &str) -> ScramKeys {
    let mut input = Vec::with_capacity(username.len() + 8);
    input.extend_from_slice(hash.name().as_bytes());
    input.push(0);
    input.extend_from_slice(username.as_bytes());
    let mut salt = ScramHash::Sha256.hmac(fake_salt_secret(), &input);
    salt.truncate(DEFAULT_SALT_LEN);
    let mut stored_key = vec![0u8; hash.output_len()];
    rand::thread_rng().fill_bytes(&mut stored_key);
    let mut server_key = vec![0u8; hash.output_len()];
    rand::thread_rng().fill_bytes(&mut server_key);
    ScramKeys {
        hash,
        salt,
        iterations: hash.default_iterations(),
        stored_key,
        server_key,
    }
}

#[cfg(test)]
mod tests {
    use super::super::cb::{CB_TLS_EXPORTER, CB_TLS_SERVER_END_POINT};
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        B64.decode(s).expect("test base64")
    }

    /// A minimal SCRAM client for tests: returns (client-final, expected server-final).
    fn client_final_for(
        hash: ScramHash,
        password: &str,
        gs2_header: &str,
        cb_data: &[u8],
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, String) {
        let mut fields = server_first.split(',');
        let nonce = fields.next().and_then(|f| f.strip_prefix("r=")).expect("r");
        let salt = b64(fields.next().and_then(|f| f.strip_prefix("s=")).expect("s"));
        let iters: u32 = fields
            .next()
            .and_then(|f| f.strip_prefix("i="))
            .expect("i")
            .parse()
            .expect("num");
        let mut cbind = gs2_header.as_bytes().to_vec();
        cbind.extend_from_slice(cb_data);
        let without_proof = format!("c={},r={nonce}", B64.encode(&cbind));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let salted = hash.hi(password.as_bytes(), &salt, iters);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored = hash.hash(&client_key);
        let sig = hash.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = hash.hmac(&salted, b"Server Key");
        let v = B64.encode(hash.hmac(&server_key, auth.as_bytes()));
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            format!("v={v}"),
        )
    }

    #[test]
    fn rfc5802_5_sha1_example() {
        let keys = derive_keys(ScramHash::Sha1, "pencil", &b64("QSXCR+Q6sek8bf92"), 4096);
        let mut s = ScramServer::new(Mechanism::ScramSha1, ChannelBinding::none(), false, None)
            .expect("new")
            .with_fixed_nonce("3rfcNHYJY1ZVvWVs7j");
        let id = s
            .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .expect("cf");
        assert_eq!(id.username, "user");
        assert_eq!(id.authzid, None);
        let sf = s.server_first(Some(keys)).expect("sf");
        assert_eq!(
            sf,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let fin = s
            .client_final(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            )
            .expect("final");
        assert_eq!(fin, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
        assert!(s.is_success());
    }

    #[test]
    fn rfc7677_3_sha256_example() {
        let keys = derive_keys(
            ScramHash::Sha256,
            "pencil",
            &b64("W22ZaJ0SNY7soEsUEjb6gQ=="),
            4096,
        );
        let mut s = ScramServer::new(Mechanism::ScramSha256, ChannelBinding::none(), true, None)
            .expect("new")
            .with_fixed_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        s.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .expect("cf");
        let sf = s.server_first(Some(keys)).expect("sf");
        assert_eq!(
            sf,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let fin = s
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .expect("final");
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn xep0474_ssdp_hash_example() {
        let s = ssdp_value(
            &["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"],
            &["tls-server-end-point", "tls-exporter"],
        );
        assert_eq!(
            s,
            "SCRAM-SHA-1\u{1e}SCRAM-SHA-1-PLUS\u{1f}tls-exporter\u{1e}tls-server-end-point"
        );
        assert_eq!(
            ssdp_hash(ScramHash::Sha1, &s),
            "G6k/rBLDqgOhRRaCuuatSDFkJ08="
        );
        assert_eq!(ssdp_value(&["PLAIN", "B"], &[]), "B\u{1e}PLAIN");
    }

    /// The XEP-0474 §4.3 example: SCRAM-SHA-1-PLUS with tls-exporter, an `x=` extension in
    /// the client-final-message and the `h` attribute in the server-first-message.
    #[test]
    fn xep0474_full_plus_example() {
        let cb = ChannelBinding {
            tls_exporter: Some(b"THIS IS FAKE CB DATA".to_vec()),
            tls_server_end_point: Some(vec![7; 32]),
        };
        let ssdp = ssdp_value(
            &["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"],
            &["tls-server-end-point", "tls-exporter"],
        );
        let keys = derive_keys(ScramHash::Sha1, "pencil", &b64("QSXCR+Q6sek8bf92"), 4096);
        let mut s = ScramServer::new(Mechanism::ScramSha1Plus, cb, true, Some(ssdp))
            .expect("new")
            .with_fixed_nonce("a09117a6-ac50-4f2f-93f1-93799c2bddf6");
        s.client_first(b"p=tls-exporter,,n=user,r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6")
            .expect("cf");
        let sf = s.server_first(Some(keys)).expect("sf");
        assert_eq!(
            String::from_utf8(sf).expect("utf8"),
            "r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,s=QSXCR+Q6sek8bf92,i=4096,h=G6k/rBLDqgOhRRaCuuatSDFkJ08="
        );
        let fin = s
            .client_final(b"c=cD10bHMtZXhwb3J0ZXIsLFRISVMgSVMgRkFLRSBDQiBEQVRB,r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,x=19C6532F-1CF4-4A27-A18D-DC9CEA41BBB3,p=M/SIDjT+dfcxUh89jZEypRvFxB4=")
            .expect("final");
        assert_eq!(fin, b"v=MQrMPvv7yv4x4Cq4W4Ih25EqS2c=");
    }

    fn cheap_keys(hash: ScramHash, pw: &str) -> ScramKeys {
        derive_keys(hash, pw, b"0123456789abcdef", 16)
    }

    fn run_plus(
        mech: Mechanism,
        server_cb: ChannelBinding,
        cb_type: &str,
        client_cb: &[u8],
    ) -> Result<Vec<u8>, SaslError> {
        let hash = mech.hash().expect("scram");
        let mut s = ScramServer::new(mech, server_cb, true, None)?;
        let gs2 = format!("p={cb_type},,");
        let bare = "n=juliet,r=clientnonce123";
        s.client_first(format!("{gs2}{bare}").as_bytes())?;
        let sf = s.server_first(Some(cheap_keys(hash, "r0m30")))?;
        let sf = String::from_utf8(sf).expect("utf8");
        let (cf, expect) = client_final_for(hash, "r0m30", &gs2, client_cb, bare, &sf);
        let out = s.client_final(cf.as_bytes())?;
        assert_eq!(out, expect.as_bytes());
        Ok(out)
    }

    #[test]
    fn rfc9266_plus_exchange_with_tls_exporter() {
        let exporter = vec![0x42; 32];
        let cb = ChannelBinding {
            tls_exporter: Some(exporter.clone()),
            tls_server_end_point: Some(vec![1; 32]),
        };
        for mech in [
            Mechanism::ScramSha1Plus,
            Mechanism::ScramSha256Plus,
            Mechanism::ScramSha512Plus,
        ] {
            run_plus(mech, cb.clone(), CB_TLS_EXPORTER, &exporter).expect("plus ok");
        }
        run_plus(
            Mechanism::ScramSha256Plus,
            cb.clone(),
            CB_TLS_SERVER_END_POINT,
            &[1; 32],
        )
        .expect("tls-server-end-point ok");
        // A MITM terminating TLS sees different exporter bytes.
        assert_eq!(
            run_plus(
                Mechanism::ScramSha256Plus,
                cb.clone(),
                CB_TLS_EXPORTER,
                &[0x43; 32]
            ),
            Err(SaslError::ChannelBindingMismatch)
        );
        // Type we do not have.
        let only_exporter = ChannelBinding {
            tls_exporter: Some(exporter.clone()),
            tls_server_end_point: None,
        };
        assert_eq!(
            run_plus(
                Mechanism::ScramSha256Plus,
                only_exporter,
                CB_TLS_SERVER_END_POINT,
                &[1; 32]
            ),
            Err(SaslError::UnsupportedChannelBinding)
        );
        assert_eq!(
            run_plus(Mechanism::ScramSha256Plus, cb, "tls-unique", &[1; 32]),
            Err(SaslError::UnsupportedChannelBinding)
        );
    }

    #[test]
    fn rfc5802_6_downgrade_and_flag_rules() {
        let cb = ChannelBinding {
            tls_exporter: Some(vec![9; 32]),
            tls_server_end_point: None,
        };
        // `y` while we offer PLUS: downgrade.
        let mut s = ScramServer::new(Mechanism::ScramSha256, cb.clone(), true, None).expect("new");
        assert_eq!(
            s.client_first(b"y,,n=user,r=abc"),
            Err(SaslError::ChannelBindingDowngrade)
        );
        // ...and the exchange is dead afterwards.
        assert!(s.server_first(None).is_err());
        // `y` without TLS (no PLUS offered) is fine, as is `n`.
        let mut s = ScramServer::new(Mechanism::ScramSha256, cb.clone(), false, None).expect("new");
        assert!(s.client_first(b"y,,n=user,r=abc").is_ok());
        let mut s = ScramServer::new(Mechanism::ScramSha256, cb.clone(), true, None).expect("new");
        assert!(s.client_first(b"n,,n=user,r=abc").is_ok());
        // p= with a non-PLUS mechanism.
        let mut s = ScramServer::new(Mechanism::ScramSha256, cb.clone(), true, None).expect("new");
        assert!(matches!(
            s.client_first(b"p=tls-exporter,,n=user,r=abc"),
            Err(SaslError::MalformedRequest(_))
        ));
        // PLUS without p=.
        let mut s =
            ScramServer::new(Mechanism::ScramSha256Plus, cb.clone(), true, None).expect("new");
        assert!(matches!(
            s.client_first(b"n,,n=user,r=abc"),
            Err(SaslError::MalformedRequest(_))
        ));
        // y + PLUS `y` check: the y,  PLUS combo is also refused.
        let mut s =
            ScramServer::new(Mechanism::ScramSha256Plus, cb.clone(), true, None).expect("new");
        assert!(s.client_first(b"y,,n=user,r=abc").is_err());
        // PLUS without TLS cannot even start.
        assert_eq!(
            ScramServer::new(Mechanism::ScramSha1Plus, cb, false, None).err(),
            Some(SaslError::EncryptionRequired)
        );
        assert_eq!(
            ScramServer::new(Mechanism::Plain, ChannelBinding::none(), true, None).err(),
            Some(SaslError::InvalidMechanism)
        );
    }

    #[test]
    fn authzid_and_saslname_escapes() {
        let mut s = ScramServer::new(Mechanism::ScramSha1, ChannelBinding::none(), true, None)
            .expect("new");
        let id = s
            .client_first(b"n,a=juliet@example.com,n=a=2Cb=3Dc,r=xyz")
            .expect("cf");
        assert_eq!(id.username, "a,b=c");
        assert_eq!(id.authzid.as_deref(), Some("juliet@example.com"));
        assert_eq!(s.identity(), Some(&id));
        for bad in [
            &b"n,a=,n=user,r=x"[..],
            b"n,b=x,n=user,r=x",
            b"n,,n=a=2Xb,r=x",
            b"n,,n=a=,r=x",
            b"n,,n=,r=x",
            b"n,,n=a\0b,r=x",
        ] {
            let mut s = ScramServer::new(Mechanism::ScramSha1, ChannelBinding::none(), true, None)
                .expect("new");
            assert!(
                matches!(s.client_first(bad), Err(SaslError::MalformedRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn malformed_client_first() {
        for bad in [
            &b""[..],
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=user,r=abc",
            b"p=,,n=user,r=abc",
            b"p=tls exporter,,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,n=user,r=a b",
            b"n,,n=user,r=abc,=x",
            b"n,,n=user,r=abc,1=x",
            b"n,,n=\xff,r=abc",
        ] {
            let mut s = ScramServer::new(Mechanism::ScramSha1, ChannelBinding::none(), true, None)
                .expect("new");
            assert!(
                s.client_first(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut s = ScramServer::new(Mechanism::ScramSha1, ChannelBinding::none(), true, None)
            .expect("new");
        assert!(s.client_first(&vec![b'a'; MAX_MESSAGE_BYTES + 1]).is_err());
    }

    fn start(hash_mech: Mechanism, pw: &str) -> (ScramServer, String, String) {
        let hash = hash_mech.hash().expect("scram");
        let mut s = ScramServer::new(hash_mech, ChannelBinding::none(), true, None).expect("new");
        let bare = "n=user,r=cnonce";
        s.client_first(format!("n,,{bare}").as_bytes()).expect("cf");
        let sf = s.server_first(Some(cheap_keys(hash, pw))).expect("sf");
        (s, bare.to_owned(), String::from_utf8(sf).expect("utf8"))
    }

    #[test]
    fn wrong_password_and_tampering_fail() {
        let (mut s, bare, sf) = start(Mechanism::ScramSha256, "right");
        let (cf, _) = client_final_for(ScramHash::Sha256, "wrong", "n,,", b"", &bare, &sf);
        assert_eq!(s.client_final(cf.as_bytes()), Err(SaslError::NotAuthorized));
        assert!(!s.is_success());
        // No second try on the same exchange.
        let (cf, _) = client_final_for(ScramHash::Sha256, "right", "n,,", b"", &bare, &sf);
        assert!(s.client_final(cf.as_bytes()).is_err());

        // Nonce changed.
        let (mut s, bare, sf) = start(Mechanism::ScramSha256, "right");
        let (cf, _) = client_final_for(ScramHash::Sha256, "right", "n,,", b"", &bare, &sf);
        let cf = cf.replacen("r=cnonce", "r=cnoncX", 1);
        assert!(matches!(
            s.client_final(cf.as_bytes()),
            Err(SaslError::MalformedRequest(_))
        ));

        // c= for a different GS2 header ("y,," instead of "n,,").
        let (mut s, bare, sf) = start(Mechanism::ScramSha256, "right");
        let (cf, _) = client_final_for(ScramHash::Sha256, "right", "y,,", b"", &bare, &sf);
        assert_eq!(
            s.client_final(cf.as_bytes()),
            Err(SaslError::ChannelBindingMismatch)
        );

        // Truncated proof.
        let (mut s, bare, sf) = start(Mechanism::ScramSha256, "right");
        let (cf, _) = client_final_for(ScramHash::Sha256, "right", "n,,", b"", &bare, &sf);
        let (head, _) = cf.rsplit_once(",p=").expect("p");
        let cf = format!("{head},p=AAAA");
        assert_eq!(s.client_final(cf.as_bytes()), Err(SaslError::NotAuthorized));
    }

    #[test]
    fn unknown_user_gets_stable_fake_salt_and_fails() {
        let salt_of = |user: &str| {
            let mut s =
                ScramServer::new(Mechanism::ScramSha256, ChannelBinding::none(), true, None)
                    .expect("new");
            s.client_first(format!("n,,n={user},r=abc").as_bytes())
                .expect("cf");
            let sf = String::from_utf8(s.server_first(None).expect("sf")).expect("utf8");
            let salt = sf.split(',').nth(1).expect("s").to_owned();
            let iters = sf.split(',').nth(2).expect("i").to_owned();
            (s, sf, salt, iters)
        };
        let (_, _, a1, i1) = salt_of("ghost");
        let (_, _, a2, _) = salt_of("ghost");
        let (_, _, b, _) = salt_of("phantom");
        assert_eq!(a1, a2, "same user, same fake salt");
        assert_ne!(a1, b);
        assert_eq!(i1, "i=4096");
        assert_eq!(
            b64(a1.strip_prefix("s=").expect("s")).len(),
            DEFAULT_SALT_LEN
        );
        // Whatever password the client tries, it fails.
        let (mut s, sf, _, _) = salt_of("ghost");
        let (cf, _) = client_final_for(
            ScramHash::Sha256,
            "anything",
            "n,,",
            b"",
            "n=ghost,r=abc",
            &sf,
        );
        assert_eq!(s.client_final(cf.as_bytes()), Err(SaslError::NotAuthorized));
        // Keys for another hash count as unknown, too.
        let mut s = ScramServer::new(Mechanism::ScramSha256, ChannelBinding::none(), true, None)
            .expect("new");
        s.client_first(b"n,,n=user,r=abc").expect("cf");
        let sf = String::from_utf8(
            s.server_first(Some(cheap_keys(ScramHash::Sha1, "pw")))
                .expect("sf"),
        )
        .expect("utf8");
        let (cf, _) = client_final_for(ScramHash::Sha256, "pw", "n,,", b"", "n=user,r=abc", &sf);
        assert_eq!(s.client_final(cf.as_bytes()), Err(SaslError::NotAuthorized));
    }

    #[test]
    fn out_of_order_steps_fail() {
        let mut s = ScramServer::new(Mechanism::ScramSha1, ChannelBinding::none(), true, None)
            .expect("new");
        assert!(s.server_first(None).is_err());
        let mut s = ScramServer::new(Mechanism::ScramSha1, ChannelBinding::none(), true, None)
            .expect("new");
        assert!(s.client_final(b"c=biws,r=x,p=AAAA").is_err());
        let mut s = ScramServer::new(Mechanism::ScramSha1, ChannelBinding::none(), true, None)
            .expect("new");
        s.client_first(b"n,,n=u,r=x").expect("cf");
        assert!(s.client_first(b"n,,n=u,r=x").is_err());
    }

    #[test]
    fn malformed_client_final() {
        for bad in [
            &b""[..],
            b"p=AAAA",
            b"c=biws,p=AAAA",
            b"c=biws,r=cnonce",
            b"c=biws,r=cnonce,p=AAAA,x=1",
            b"c=!!!,r=cnonce,p=AAAA",
            b"c=biws,r=cnonce,p=!!!",
            b"r=cnonce,c=biws,p=AAAA",
            b"c=biws,r=cnonce,p=AA,p=AAAA",
            b"c=biws,r=cnonce,1,p=AAAA",
            b"\xff\xfe",
        ] {
            let (mut s, _, _) = start(Mechanism::ScramSha1, "pw");
            assert!(
                s.client_final(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Fuzz-like: random and mutated inputs never panic and never succeed.
    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5c7a_3d00);
        let seeds: [&[u8]; 4] = [
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            b"p=tls-exporter,a=x,n=u=2C,r=abc,e=f",
            b"c=biws,r=cnonceXYZ,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            b"y,,n=user,r=abc",
        ];
        let cb = ChannelBinding {
            tls_exporter: Some(vec![1; 32]),
            tls_server_end_point: Some(vec![2; 32]),
        };
        let keys = cheap_keys(ScramHash::Sha1, "pw");
        for i in 0..3000 {
            let input: Vec<u8> = if i % 2 == 0 {
                let len = rng.gen_range(0..80);
                (0..len).map(|_| rng.r#gen::<u8>()).collect()
            } else {
                let mut v = seeds[rng.gen_range(0..seeds.len())].to_vec();
                for _ in 0..rng.gen_range(1..4) {
                    if v.is_empty() {
                        break;
                    }
                    let at = rng.gen_range(0..v.len());
                    match rng.gen_range(0..3) {
                        0 => v[at] = rng.r#gen(),
                        1 => {
                            v.remove(at);
                        }
                        _ => v.insert(at, b",=\0"[rng.gen_range(0..3)]),
                    }
                }
                v
            };
            let mech = [Mechanism::ScramSha1, Mechanism::ScramSha1Plus][i % 2];
            let mut s = ScramServer::new(mech, cb.clone(), true, None).expect("new");
            if s.client_first(&input).is_ok() {
                let _ = s.server_first(Some(keys.clone())).expect("sf");
                assert!(s.client_final(&input).is_err());
            }
            let (mut s, _, _) = start(Mechanism::ScramSha1, "pw");
            assert!(s.client_final(&input).is_err());
        }
    }

    #[test]
    fn keys_debug_hides_secrets() {
        let k = cheap_keys(ScramHash::Sha256, "pw");
        let d = format!("{k:?}");
        assert!(!d.contains("stored_key"));
        assert!(d.contains("iterations"));
    }

    #[test]
    fn new_keys_are_salted_and_verify() {
        let a = new_keys(ScramHash::Sha1, "secret");
        let b = new_keys(ScramHash::Sha1, "secret");
        assert_eq!(a.salt.len(), DEFAULT_SALT_LEN);
        assert_ne!(a.salt, b.salt);
        assert_eq!(a.iterations, 4096);
        assert_eq!(ScramHash::Sha512.default_iterations(), 10000);
        assert_eq!(
            derive_keys(ScramHash::Sha1, "secret", &a.salt, a.iterations),
            a
        );
    }

    #[test]
    fn rfc8265_password_preparation() {
        assert_eq!(prepare_password("pencil").as_deref(), Some("pencil"));
        // Non-ASCII space maps to ASCII space (RFC 8265 §4.2.1).
        assert_eq!(prepare_password("a\u{00A0}b").as_deref(), Some("a b"));
        assert_eq!(prepare_password(""), None);
        assert_eq!(prepare_password("a\u{7}b"), None);
        // Same keys whether or not the client mapped the space itself.
        let salt = b"saltsaltsaltsalt";
        assert_eq!(
            derive_keys(ScramHash::Sha1, "a\u{00A0}b", salt, 16),
            derive_keys(ScramHash::Sha1, "a b", salt, 16)
        );
    }
}
