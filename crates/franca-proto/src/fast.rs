//! XEP-0484 Fast Authentication Streamlining Tokens (FAST), the server's side, with the
//! hashed-token SASL mechanisms of draft-schmaus-kitten-sasl-ht (`HT-SHA-256-*`) that FAST
//! tokens are used with. Sans-IO: the caller stores tokens, reads the clock and picks
//! expiry times.
//!
//! A client that logged in some other way over SASL2 asks for a token (`<request-token/>`),
//! which is tied to its user-agent id and to one HT mechanism. Later it logs in with one
//! message, `authcid NUL HMAC-SHA-256(token, "Initiator" || cb-data)`, and the server proves
//! it knows the token too with `HMAC-SHA-256(token, "Responder" || cb-data)` in `<success/>`.
//! `cb-data` is the channel binding the mechanism names (none, `tls-server-end-point`,
//! `tls-exporter`); `HT-SHA-256-UNIQ` needs `tls-unique`, which TLS 1.3 does not have, so it
//! is not offered.
//!
//! Tokens are stored hashed ([`token_key`], SHA-256). Every token issued here is longer than
//! SHA-256's 64-byte block, and HMAC replaces such a key by its hash (RFC 2104 §2), so
//! HMAC(token, m) = HMAC(SHA-256(token), m): the stored hash verifies the mechanism and the
//! token text itself is never stored. (As with any HMAC-based mechanism, the stored value is
//! still enough to compute the proof; what hashing adds is that a database dump does not hand
//! out the tokens clients hold, and lookups never compare secrets in SQL.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use franca_xml::Element;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::ns::NS_FAST;
use crate::sasl::{CB_TLS_EXPORTER, CB_TLS_SERVER_END_POINT, ChannelBinding, SaslError};

/// Random bytes in a new token: 66 bytes are 88 base64url characters, over HMAC-SHA-256's
/// 64-byte block (see the module documentation for why that matters).
const TOKEN_BYTES: usize = 66;
/// Length of an HMAC-SHA-256 proof.
const PROOF_LEN: usize = 32;
/// Longest authcid accepted in an HT initial response (a localpart is at most 1023 bytes;
/// `local@domain` adds the domain).
const MAX_AUTHCID_BYTES: usize = 2048;

/// An HT mechanism with SHA-256 (draft-schmaus-kitten-sasl-ht §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HtMechanism {
    /// `HT-SHA-256-EXPR`: bound to the RFC 9266 `tls-exporter` value.
    Sha256Expr,
    /// `HT-SHA-256-ENDP`: bound to the RFC 5929 `tls-server-end-point` value.
    Sha256Endp,
    /// `HT-SHA-256-NONE`: no channel binding (web clients cannot get one).
    Sha256None,
}

impl HtMechanism {
    /// Strongest first, the order to advertise them in.
    pub const ALL: [HtMechanism; 3] = [
        HtMechanism::Sha256Expr,
        HtMechanism::Sha256Endp,
        HtMechanism::Sha256None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HtMechanism::Sha256Expr => "HT-SHA-256-EXPR",
            HtMechanism::Sha256Endp => "HT-SHA-256-ENDP",
            HtMechanism::Sha256None => "HT-SHA-256-NONE",
        }
    }

    pub fn from_name(name: &str) -> Option<HtMechanism> {
        HtMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The channel-binding data this mechanism covers on a connection, `None` when the
    /// connection does not have it (the mechanism is then not offered).
    pub fn cb_data(self, cb: Option<&ChannelBinding>) -> Option<Vec<u8>> {
        let cb_type = match self {
            HtMechanism::Sha256None => return Some(Vec::new()),
            HtMechanism::Sha256Expr => CB_TLS_EXPORTER,
            HtMechanism::Sha256Endp => CB_TLS_SERVER_END_POINT,
        };
        cb?.data(cb_type).map(<[u8]>::to_vec)
    }

    /// The mechanisms a connection with these channel bindings can offer.
    pub fn offered(cb: Option<&ChannelBinding>) -> Vec<HtMechanism> {
        HtMechanism::ALL
            .into_iter()
            .filter(|m| m.cb_data(cb).is_some())
            .collect()
    }
}

/// A new token for a client: 88 characters of base64url over 66 random bytes.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    B64URL.encode(bytes)
}

/// What is stored for a token: SHA-256 of its text, which is also the HMAC key the HT
/// mechanisms work with for tokens longer than 64 bytes.
pub fn token_key(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn hmac(key: &[u8], label: &[u8], cb_data: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(label.len() + cb_data.len());
    msg.extend_from_slice(label);
    msg.extend_from_slice(cb_data);
    crate::sasl::ScramHash::Sha256.hmac(key, &msg)
}

/// The server's proof for `<additional-data/>`: HMAC(key, "Responder" || cb-data).
pub fn responder_proof(key: &[u8], cb_data: &[u8]) -> Vec<u8> {
    hmac(key, b"Responder", cb_data)
}

/// The client's initial response, `authcid NUL initiator-hashed-token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialResponse {
    pub authcid: String,
    pub proof: Vec<u8>,
}

/// Parses an HT initial response (draft-schmaus-kitten-sasl-ht §3.1): an authcid of 1 to
/// 2048 bytes of UTF-8 without NUL, a NUL, and the 32-byte HMAC.
pub fn parse_initial_response(data: &[u8]) -> Result<InitialResponse, SaslError> {
    let nul = data
        .iter()
        .position(|&b| b == 0)
        .ok_or(SaslError::MalformedRequest("HT: no NUL after the authcid"))?;
    let (authcid, proof) = (&data[..nul], &data[nul + 1..]);
    if authcid.is_empty() || authcid.len() > MAX_AUTHCID_BYTES {
        return Err(SaslError::MalformedRequest("HT: bad authcid length"));
    }
    if proof.len() != PROOF_LEN {
        return Err(SaslError::MalformedRequest("HT: the proof is not 32 bytes"));
    }
    let authcid = std::str::from_utf8(authcid)
        .map_err(|_| SaslError::MalformedRequest("HT: authcid is not UTF-8"))?;
    Ok(InitialResponse {
        authcid: authcid.to_owned(),
        proof: proof.to_vec(),
    })
}

/// A stored token of the client that is logging in, as the caller hands it over for
/// checking: what storage has, plus whether it has expired by the caller's clock.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// [`token_key`] of the token.
    pub key: Vec<u8>,
    /// The name of the HT mechanism it was issued for.
    pub mechanism: String,
    pub expired: bool,
    /// The highest replay counter accepted for it so far (0: none yet).
    pub count: u32,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("mechanism", &self.mechanism)
            .field("expired", &self.expired)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Finds the token whose HMAC the client sent and checks that it may be used: issued for
/// this mechanism (XEP-0484 §3.4), not expired (`credentials-expired`, as XEP-0484 §4.2 asks
/// for a token the server no longer trusts) and, when the client sends a replay counter, with
/// a counter above every one accepted before (§3.4). Returns the index of the token.
///
/// Every candidate is compared, in constant time, whatever matched before, so the time taken
/// tells nothing about which token (if any) was close.
pub fn check(
    tokens: &[StoredToken],
    mechanism: HtMechanism,
    cb_data: &[u8],
    proof: &[u8],
    count: Option<u32>,
) -> Result<usize, SaslError> {
    let mut found: Option<usize> = None;
    for (i, t) in tokens.iter().enumerate() {
        let expected = hmac(&t.key, b"Initiator", cb_data);
        let same: Choice = expected.as_slice().ct_eq(proof);
        let right_mech = t.mechanism == mechanism.name();
        if bool::from(same) && right_mech && found.is_none() {
            found = Some(i);
        }
    }
    let i = found.ok_or(SaslError::NotAuthorized)?;
    let token = &tokens[i];
    if token.expired {
        return Err(SaslError::CredentialsExpired);
    }
    if count.is_some_and(|c| c <= token.count) {
        return Err(SaslError::NotAuthorized);
    }
    Ok(i)
}

/// The client's `<fast xmlns='urn:xmpp:fast:0' count='…' invalidate='…'/>` in
/// `<authenticate/>` (XEP-0484 §3.4, §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FastRequest {
    pub count: Option<u32>,
    pub invalidate: bool,
}

impl FastRequest {
    /// `count` must be an unsigned 32-bit integer when present.
    pub fn parse(el: &Element) -> Result<FastRequest, SaslError> {
        let count = match el.attr("count") {
            None => None,
            Some(c) => Some(
                c.parse::<u32>()
                    .map_err(|_| SaslError::MalformedRequest("FAST: bad count"))?,
            ),
        };
        Ok(FastRequest {
            count,
            invalidate: matches!(el.attr("invalidate"), Some("true" | "1")),
        })
    }
}

/// The SASL2 inline feature `<fast xmlns='urn:xmpp:fast:0'>` listing the mechanisms
/// (XEP-0484 §3.1). No `tls-0rtt`: TLS early data is not accepted.
pub fn feature(mechanisms: &[HtMechanism]) -> Element {
    let mut f = Element::new("fast", NS_FAST);
    for m in mechanisms {
        f.push(Element::new("mechanism", NS_FAST).with_text(m.name()));
    }
    f
}

/// `<token xmlns='urn:xmpp:fast:0' expiry='…' token='…'/>` for `<success/>` (XEP-0484 §3.3);
/// `expiry` is a XEP-0082 date-time.
pub fn token_element(token: &str, expiry: &str) -> Element {
    Element::new("token", NS_FAST)
        .with_attr("expiry", expiry)
        .with_attr("token", token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hmac::{Hmac, Mac};

    fn client_proof(token: &str, label: &[u8], cb: &[u8]) -> Vec<u8> {
        // What a client computes: the token text itself is the HMAC key.
        let mut m = Hmac::<Sha256>::new_from_slice(token.as_bytes()).unwrap();
        m.update(label);
        m.update(cb);
        m.finalize().into_bytes().to_vec()
    }

    fn stored(token: &str, mech: HtMechanism) -> StoredToken {
        StoredToken {
            key: token_key(token),
            mechanism: mech.name().into(),
            expired: false,
            count: 0,
        }
    }

    #[test]
    fn rfc2104_2_the_stored_hash_verifies_what_the_token_signs() {
        let token = new_token();
        assert!(token.len() > 64, "{token}");
        assert_ne!(new_token(), token);
        let key = token_key(&token);
        assert_eq!(
            hmac(&key, b"Initiator", b""),
            client_proof(&token, b"Initiator", b"")
        );
        assert_eq!(
            responder_proof(&key, b"cb"),
            client_proof(&token, b"Responder", b"cb")
        );
    }

    #[test]
    fn ht_initial_response_parsing_is_strict() {
        let mut data = b"juliet\0".to_vec();
        data.extend([7u8; 32]);
        let r = parse_initial_response(&data).unwrap();
        assert_eq!(r.authcid, "juliet");
        assert_eq!(r.proof, vec![7u8; 32]);
        assert!(parse_initial_response(b"juliet").is_err());
        assert!(parse_initial_response(b"\0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(parse_initial_response(b"juliet\0short").is_err());
        let mut long = vec![b'a'; MAX_AUTHCID_BYTES + 1];
        long.push(0);
        long.extend([0u8; 32]);
        assert!(parse_initial_response(&long).is_err());
        let mut bad_utf8 = vec![0xff, 0xfe, 0];
        bad_utf8.extend([0u8; 32]);
        assert!(parse_initial_response(&bad_utf8).is_err());
    }

    #[test]
    fn xep0484_3_4_the_right_token_for_the_right_mechanism() {
        let (a, b) = (new_token(), new_token());
        let tokens = [
            stored(&a, HtMechanism::Sha256None),
            stored(&b, HtMechanism::Sha256Expr),
        ];
        let proof = client_proof(&b, b"Initiator", b"exp");
        assert_eq!(
            check(&tokens, HtMechanism::Sha256Expr, b"exp", &proof, None),
            Ok(1)
        );
        // Another channel binding value, or the token's proof under another mechanism.
        assert_eq!(
            check(&tokens, HtMechanism::Sha256Expr, b"other", &proof, None),
            Err(SaslError::NotAuthorized)
        );
        let proof_a = client_proof(&a, b"Initiator", b"");
        assert_eq!(
            check(&tokens, HtMechanism::Sha256Expr, b"", &proof_a, None),
            Err(SaslError::NotAuthorized)
        );
        assert_eq!(
            check(&tokens, HtMechanism::Sha256None, b"", &proof_a, None),
            Ok(0)
        );
        // A token of someone else (not among this user's candidates).
        let stranger = client_proof(&new_token(), b"Initiator", b"");
        assert_eq!(
            check(&tokens, HtMechanism::Sha256None, b"", &stranger, None),
            Err(SaslError::NotAuthorized)
        );
        assert_eq!(
            check(&[], HtMechanism::Sha256None, b"", &proof_a, None),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn xep0484_expired_tokens_and_replayed_counters_are_refused() {
        let t = new_token();
        let proof = client_proof(&t, b"Initiator", b"");
        let mut s = stored(&t, HtMechanism::Sha256None);
        s.count = 5;
        let tokens = [s.clone()];
        assert_eq!(
            check(&tokens, HtMechanism::Sha256None, b"", &proof, Some(5)),
            Err(SaslError::NotAuthorized)
        );
        assert_eq!(
            check(&tokens, HtMechanism::Sha256None, b"", &proof, Some(4)),
            Err(SaslError::NotAuthorized)
        );
        assert_eq!(
            check(&tokens, HtMechanism::Sha256None, b"", &proof, Some(6)),
            Ok(0)
        );
        s.expired = true;
        assert_eq!(
            check(&[s], HtMechanism::Sha256None, b"", &proof, Some(6)),
            Err(SaslError::CredentialsExpired)
        );
    }

    #[test]
    fn xep0484_fast_element() {
        let el = Element::new("fast", NS_FAST).with_attr("count", "12");
        assert_eq!(
            FastRequest::parse(&el),
            Ok(FastRequest {
                count: Some(12),
                invalidate: false
            })
        );
        let el = Element::new("fast", NS_FAST).with_attr("invalidate", "true");
        assert!(FastRequest::parse(&el).unwrap().invalidate);
        let el = Element::new("fast", NS_FAST).with_attr("count", "-1");
        assert!(FastRequest::parse(&el).is_err());
        let el = Element::new("fast", NS_FAST).with_attr("count", "99999999999");
        assert!(FastRequest::parse(&el).is_err());
    }

    #[test]
    fn channel_binding_decides_what_is_offered() {
        assert_eq!(HtMechanism::offered(None), vec![HtMechanism::Sha256None]);
        let cb = ChannelBinding {
            tls_exporter: Some(vec![1; 32]),
            tls_server_end_point: Some(vec![2; 32]),
        };
        assert_eq!(HtMechanism::offered(Some(&cb)), HtMechanism::ALL.to_vec());
        assert_eq!(
            HtMechanism::Sha256Endp.cb_data(Some(&cb)),
            Some(vec![2; 32])
        );
        for m in HtMechanism::ALL {
            assert_eq!(HtMechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(HtMechanism::from_name("HT-SHA-256-UNIQ"), None);
    }
}
