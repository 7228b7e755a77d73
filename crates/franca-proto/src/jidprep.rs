//! JID preparation rules for new accounts and for bare-JID keys.
//!
//! Stanza addresses are parsed with the `jid` crate, which applies the RFC 6122 stringprep
//! profiles (Nodeprep, Nameprep, Resourceprep) like Prosody and ejabberd still do. RFC 7622 (which
//! obsoletes RFC 6122) prepares localparts with the PRECIS `UsernameCaseMapped` profile
//! (RFC 7622 §3.3, RFC 8265 §3.3). A *new* localpart (registration, admin `user add`) must be
//! acceptable to both, and already be in normal form under both, so the same account name is
//! reached whichever profile a peer applies; RFC 7622 §3.3.1 and RFC 6122 §2.3 cap a localpart
//! at 1023 bytes. RFC 7622 §3.2 strips one trailing dot from a domainpart.

use jid::{BareJid, NodePart};
use precis_profiles::UsernameCaseMapped;
use precis_profiles::precis_core::profile::PrecisFastInvocation;

/// The JID parsing error (re-exported from the `jid` crate).
pub use jid::Error as JidError;

/// Maximum localpart length in bytes (RFC 7622 §3.3.1).
pub const MAX_LOCALPART_BYTES: usize = 1023;

/// True when `s` may be used as the localpart of a newly created account: 1..=1023 bytes, valid
/// under RFC 6122 Nodeprep (the `jid` crate) and RFC 8265 `UsernameCaseMapped`, and mapped to
/// itself by both (already lower-case and NFC; no characters that either profile rewrites).
pub fn valid_new_localpart(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_LOCALPART_BYTES {
        return false;
    }
    match NodePart::new(s) {
        // Compare the text: stringprep returns an owned copy for non-ASCII input even when it
        // changes nothing.
        Ok(n) if n.as_str() == s => {}
        _ => return false,
    }
    matches!(UsernameCaseMapped::enforce(s), Ok(p) if p == s)
}

/// Parses a bare JID and returns its normalised `local@domain` (or `domain`) form.
///
/// Fails with [`JidError::ResourceInBareJid`] when `s` has a resource, and with the `jid`
/// crate's error when any part is invalid. A single trailing dot on the domain is removed
/// (RFC 7622 §3.2).
pub fn normalise_bare(s: &str) -> Result<String, JidError> {
    let bare = BareJid::new(s)?;
    let domain = bare.domain().as_str();
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(JidError::Idna);
    }
    Ok(match bare.node() {
        Some(node) => format!("{}@{}", node.as_str(), domain),
        None => domain.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7622_3_3_plain_localparts() {
        assert!(valid_new_localpart("juliet"));
        assert!(valid_new_localpart("romeo.montague"));
        assert!(valid_new_localpart("user_1-2"));
        assert!(valid_new_localpart("élise"));
    }

    #[test]
    fn rfc7622_3_3_rejects_unnormalised_or_invalid() {
        assert!(!valid_new_localpart(""));
        assert!(
            !valid_new_localpart("Juliet"),
            "upper case is not normalised"
        );
        assert!(
            !valid_new_localpart("e\u{301}lise"),
            "decomposed is not NFC"
        );
        assert!(!valid_new_localpart("a b"), "space");
        assert!(!valid_new_localpart("a@b"));
        assert!(!valid_new_localpart("a/b"));
        assert!(!valid_new_localpart("a:b"), "nodeprep prohibits ':'");
        assert!(!valid_new_localpart("a\"b"));
        assert!(!valid_new_localpart("<a>"));
        assert!(!valid_new_localpart("a\u{0}b"));
        assert!(
            !valid_new_localpart("\u{FB01}x"),
            "ligature is mapped by NFKC"
        );
        assert!(!valid_new_localpart(&"a".repeat(1024)));
        assert!(valid_new_localpart(&"a".repeat(1023)));
    }

    #[test]
    fn normalise_bare_jids() {
        assert_eq!(
            normalise_bare("Juliet@Example.COM").as_deref(),
            Ok("juliet@example.com")
        );
        assert_eq!(normalise_bare("example.com").as_deref(), Ok("example.com"));
        assert_eq!(
            normalise_bare("juliet@example.com.").as_deref(),
            Ok("juliet@example.com")
        );
        assert_eq!(
            normalise_bare("juliet@example.com/balcony"),
            Err(JidError::ResourceInBareJid)
        );
        assert!(normalise_bare("@example.com").is_err());
        assert!(normalise_bare("a@b@c").is_err());
        assert!(normalise_bare("").is_err());
    }
}
