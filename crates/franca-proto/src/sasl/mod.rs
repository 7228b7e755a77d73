//! Server-side SASL mechanisms, sans-IO.
//!
//! * RFC 6120 §6: the XMPP SASL profile — base64 payloads (§6.4.2), failure conditions (§6.5),
//!   authorization identities (§6.3.8).
//! * RFC 5802: SCRAM (SCRAM-SHA-1[-PLUS]); RFC 7677: SCRAM-SHA-256[-PLUS];
//!   draft-melnikov-scram-sha-512: SCRAM-SHA-512[-PLUS]. See [`ScramServer`].
//! * RFC 5056 / RFC 5929 §4 (`tls-server-end-point`) / RFC 9266 (`tls-exporter`): channel
//!   binding, and XEP-0440 to advertise the supported types. See [`ChannelBinding`].
//! * XEP-0474 (SASL SCRAM Downgrade Protection, version 0.5): the `h` attribute in the
//!   server-first-message. See [`ssdp_value`].
//! * RFC 4616: PLAIN. See [`plain_parse`] and [`plain_verify`].
//! * RFC 8265 §4 (`OpaqueString`) prepares passwords, replacing SASLprep (RFC 4013).
//!
//! Credentials are stored only as [`ScramKeys`] (salt, iteration count, StoredKey,
//! ServerKey; RFC 5802 §3), never as plaintext.
//!
//! Everything here is a pure function or a state machine over byte strings: the caller
//! decodes the base64 of `<auth/>`/`<response/>` ([`decode_payload`]), looks credentials up
//! (asynchronously, between steps) and encodes the reply.

mod cb;
mod plain;
mod scram;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use franca_xml::Element;

use crate::jidprep::normalise_bare;
use crate::ns::{NS_SASL, NS_SASL_CB};

pub use cb::{CB_TLS_EXPORTER, CB_TLS_SERVER_END_POINT, ChannelBinding, tls_server_end_point};
pub use plain::{MAX_PLAIN_FIELD_BYTES, plain_parse, plain_verify};
pub use scram::{
    ClientFirst, DEFAULT_SALT_LEN, ScramHash, ScramKeys, ScramServer, derive_keys, new_keys,
    prepare_password, ssdp_hash, ssdp_value,
};

/// A SASL mechanism the server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// SCRAM-SHA-1-PLUS (RFC 5802, with channel binding).
    ScramSha1Plus,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-256-PLUS (RFC 7677, with channel binding).
    ScramSha256Plus,
    /// SCRAM-SHA-512 (draft-melnikov-scram-sha-512).
    ScramSha512,
    /// SCRAM-SHA-512-PLUS (draft-melnikov-scram-sha-512, with channel binding).
    ScramSha512Plus,
    /// PLAIN (RFC 4616); only over TLS (RFC 6120 §13.8.3).
    Plain,
}

impl Mechanism {
    /// All mechanisms, strongest first (the order to advertise them in).
    pub const ALL: [Mechanism; 7] = [
        Mechanism::ScramSha512Plus,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha512,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The IANA mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::ScramSha512Plus => "SCRAM-SHA-512-PLUS",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Parses a mechanism name (case-sensitive, as registered; RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SCRAM hash, or `None` for PLAIN.
    pub fn hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            Mechanism::ScramSha512 | Mechanism::ScramSha512Plus => Some(ScramHash::Sha512),
            Mechanism::Plain => None,
        }
    }

    /// True for the `-PLUS` (channel-binding) variants.
    pub fn is_plus(self) -> bool {
        matches!(
            self,
            Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus | Mechanism::ScramSha512Plus
        )
    }
}

/// Why a SASL exchange failed, mapped to the RFC 6120 §6.5 failure conditions by
/// [`SaslError::condition`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// §6.5.1 — the client aborted.
    #[error("aborted")]
    Aborted,
    /// §6.5.2 — the account is disabled.
    #[error("account disabled")]
    AccountDisabled,
    /// §6.5.3 — the credentials have expired.
    #[error("credentials expired")]
    CredentialsExpired,
    /// §6.5.4 — the mechanism needs TLS first.
    #[error("encryption required")]
    EncryptionRequired,
    /// §6.5.5 — the base64 payload could not be decoded.
    #[error("incorrect base64 encoding")]
    IncorrectEncoding,
    /// §6.5.6 — the authorization identity is not acceptable.
    #[error("invalid authzid")]
    InvalidAuthzid,
    /// §6.5.7 — the mechanism is not offered.
    #[error("invalid mechanism")]
    InvalidMechanism,
    /// §6.5.8 — the message does not follow the mechanism's syntax.
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
    /// §6.5.9 — the mechanism is weaker than policy allows.
    #[error("mechanism too weak")]
    MechanismTooWeak,
    /// §6.5.10 — wrong credentials, unknown user or failed proof.
    #[error("not authorized")]
    NotAuthorized,
    /// §6.5.11 — a temporary failure (e.g. the credential store is unreachable).
    #[error("temporary auth failure")]
    TemporaryAuthFailure,
    /// RFC 5802 §6: the client sent `y` (thinks the server lacks channel binding) although
    /// the server offers -PLUS mechanisms — a downgrade. Reported as `not-authorized`.
    #[error("channel binding downgrade detected")]
    ChannelBindingDowngrade,
    /// The channel-binding data in the client-final-message does not match ours.
    /// Reported as `not-authorized`.
    #[error("channel binding mismatch")]
    ChannelBindingMismatch,
    /// The client asked for a channel-binding type we do not offer on this connection.
    /// Reported as `malformed-request`.
    #[error("unsupported channel binding type")]
    UnsupportedChannelBinding,
}

impl SaslError {
    /// The RFC 6120 §6.5 condition element name.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::Aborted => "aborted",
            SaslError::AccountDisabled => "account-disabled",
            SaslError::CredentialsExpired => "credentials-expired",
            SaslError::EncryptionRequired => "encryption-required",
            SaslError::IncorrectEncoding => "incorrect-encoding",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::MalformedRequest(_) | SaslError::UnsupportedChannelBinding => {
                "malformed-request"
            }
            SaslError::MechanismTooWeak => "mechanism-too-weak",
            SaslError::NotAuthorized
            | SaslError::ChannelBindingDowngrade
            | SaslError::ChannelBindingMismatch => "not-authorized",
            SaslError::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    /// `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><condition/>[<text/>]</failure>`
    /// (RFC 6120 §6.4.5).
    pub fn to_failure_element(&self, text: Option<&str>) -> Element {
        let mut f =
            Element::new("failure", NS_SASL).with_child(Element::new(self.condition(), NS_SASL));
        if let Some(t) = text {
            f.push(
                Element::new("text", NS_SASL)
                    .with_attr("xml:lang", "en")
                    .with_text(t),
            );
        }
        f
    }
}

/// Decodes the character data of `<auth/>`, `<response/>` (RFC 6120 §6.4.2): a single `=`
/// means an empty response; whitespace is ignored; anything not base64 is
/// [`SaslError::IncorrectEncoding`]. An empty string also decodes to no bytes: a caller that
/// must tell "no initial response" (empty `<auth/>`) from "empty initial response" (`=`) checks
/// the text before calling.
pub fn decode_payload(text: &str) -> Result<Vec<u8>, SaslError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact == "=" {
        return Ok(Vec::new());
    }
    B64.decode(compact.as_bytes())
        .map_err(|_| SaslError::IncorrectEncoding)
}

/// Encodes data for `<challenge/>`/`<success/>`: base64, with `=` for an empty payload
/// (RFC 6120 §6.4.2).
pub fn encode_payload(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_owned()
    } else {
        B64.encode(data)
    }
}

/// Checks a client-supplied authorization identity (RFC 6120 §6.3.8): none, or one equal to the
/// authenticated account's bare JID `username@domain` (after normalisation), is accepted;
/// anything else is [`SaslError::InvalidAuthzid`] (we do not support acting on behalf of
/// another entity).
pub fn check_authzid(authzid: Option<&str>, username: &str, domain: &str) -> Result<(), SaslError> {
    let Some(a) = authzid else { return Ok(()) };
    let claimed = normalise_bare(a).map_err(|_| SaslError::InvalidAuthzid)?;
    let own =
        normalise_bare(&format!("{username}@{domain}")).map_err(|_| SaslError::InvalidAuthzid)?;
    if claimed == own {
        Ok(())
    } else {
        Err(SaslError::InvalidAuthzid)
    }
}

/// The XEP-0440 stream feature `<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>` with one
/// `<channel-binding type='…'/>` per type (XEP-0440 §2).
pub fn channel_binding_feature(types: &[&str]) -> Element {
    let mut f = Element::new("sasl-channel-binding", NS_SASL_CB);
    for t in types {
        f.push(Element::new("channel-binding", NS_SASL_CB).with_attr("type", *t));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert!(Mechanism::ScramSha256Plus.is_plus());
        assert!(!Mechanism::ScramSha256.is_plus());
        assert_eq!(Mechanism::Plain.hash(), None);
        assert_eq!(Mechanism::ScramSha512Plus.hash(), Some(ScramHash::Sha512));
    }

    #[test]
    fn rfc6120_6_5_conditions() {
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(
            SaslError::ChannelBindingDowngrade.condition(),
            "not-authorized"
        );
        assert_eq!(
            SaslError::MalformedRequest("x").condition(),
            "malformed-request"
        );
        assert_eq!(
            SaslError::IncorrectEncoding.condition(),
            "incorrect-encoding"
        );
        let f = SaslError::AccountDisabled.to_failure_element(Some("ask the admin"));
        assert!(f.is("failure", NS_SASL));
        assert!(f.has_child("account-disabled", NS_SASL));
        assert_eq!(
            f.child("text", NS_SASL).map(|t| t.text()),
            Some("ask the admin".into())
        );
    }

    #[test]
    fn rfc6120_6_4_2_payload_coding() {
        assert_eq!(decode_payload("="), Ok(vec![]));
        assert_eq!(decode_payload(""), Ok(vec![]));
        assert_eq!(
            decode_payload("AGp1bGlldABy\nMG0zMG15cjBtMzA="),
            Ok(b"\0juliet\0r0m30myr0m30".to_vec())
        );
        assert_eq!(decode_payload("!!"), Err(SaslError::IncorrectEncoding));
        assert_eq!(encode_payload(b""), "=");
        assert_eq!(encode_payload(b"hi"), "aGk=");
    }

    #[test]
    fn rfc6120_6_3_8_authzid() {
        assert_eq!(check_authzid(None, "juliet", "example.com"), Ok(()));
        assert_eq!(
            check_authzid(Some("Juliet@EXAMPLE.com"), "juliet", "example.com"),
            Ok(())
        );
        assert_eq!(
            check_authzid(Some("romeo@example.com"), "juliet", "example.com"),
            Err(SaslError::InvalidAuthzid)
        );
        assert_eq!(
            check_authzid(Some("juliet@example.com/res"), "juliet", "example.com"),
            Err(SaslError::InvalidAuthzid)
        );
    }

    #[test]
    fn xep0440_feature() {
        let f = channel_binding_feature(&[CB_TLS_EXPORTER, CB_TLS_SERVER_END_POINT]);
        assert!(f.is("sasl-channel-binding", NS_SASL_CB));
        let types: Vec<_> = f.elements().filter_map(|c| c.attr("type")).collect();
        assert_eq!(types, vec!["tls-exporter", "tls-server-end-point"]);
    }
}
