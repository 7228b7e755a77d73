//! The reader's error type and its mapping to RFC 6120 stream error conditions.

/// Why a stream could not be read. Each variant maps to one stream error condition.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmlError {
    /// Syntax errors, invalid UTF-8, mismatched tags.
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// DTD, entity reference, processing instruction, comment (RFC 6120 §11.1).
    #[error("restricted XML: {0}")]
    RestrictedXml(String),
    /// Stanza bytes, depth or attribute count over the configured limits.
    #[error("policy violation: {0}")]
    PolicyViolation(String),
    /// Stream element not in the streams namespace, or a bad prefix.
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
    /// Well-formed but not a valid XMPP stream, e.g. text between stanzas.
    #[error("bad format: {0}")]
    BadFormat(String),
}

impl XmlError {
    /// The RFC 6120 §4.9.3 stream error condition element name for this error.
    pub fn stream_condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::RestrictedXml(_) => "restricted-xml",
            XmlError::PolicyViolation(_) => "policy-violation",
            XmlError::InvalidNamespace(_) => "invalid-namespace",
            XmlError::BadFormat(_) => "bad-format",
        }
    }
}

impl XmlError {
    /// Classifies an rxml error. rxml's messages are `&'static str`, so matching on the
    /// few that need a different condition is stable within one rxml version.
    pub(crate) fn from_rxml(e: rxml::Error) -> XmlError {
        use rxml::Error as E;
        let msg = e.to_string();
        match e {
            // rxml reports its token-length and counter overflows as restricted XML, but for
            // a peer they are size limits like ours.
            E::RestrictedXml("long name or reference" | "event too long") => {
                XmlError::PolicyViolation(msg)
            }
            E::RestrictedXml(_) | E::UndeclaredEntity => XmlError::RestrictedXml(msg),
            // `<!` not followed by `--` or `[CDATA[`: a DOCTYPE or other markup declaration
            // (rxml has no DTD support and stops at the first byte after `<!`).
            E::InvalidSyntax("malformed cdata or comment section start") => {
                XmlError::RestrictedXml(format!("DTD or markup declaration ({msg})"))
            }
            _ => XmlError::NotWellFormed(msg),
        }
    }
}
