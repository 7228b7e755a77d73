//! Namespace resolution for the raw (prefix-level) events rxml's `RawParser` emits.
//!
//! We resolve namespaces ourselves instead of using `rxml::Parser` because that parser
//! swallows `xmlns` declarations (the stream header's content namespace, e.g.
//! `jabber:client`, would be lost) and collects a whole start tag before we could
//! count its attributes.

use crate::error::XmlError;
use crate::writer::NS_XML;

/// The declarations of one open element.
#[derive(Debug, Default)]
struct Frame {
    default: Option<String>,
    prefixes: Vec<(String, String)>,
}

/// Declarations in scope, one frame per open element (the stream root included).
#[derive(Debug, Default)]
pub(super) struct Scopes {
    frames: Vec<Frame>,
}

impl Scopes {
    pub(super) fn push(&mut self, default: Option<String>, prefixes: Vec<(String, String)>) {
        self.frames.push(Frame { default, prefixes });
    }

    pub(super) fn pop(&mut self) {
        self.frames.pop();
    }

    /// The URI a prefix (or the default namespace, for `None`) is bound to.
    pub(super) fn resolve(&self, prefix: Option<&str>) -> Result<&str, XmlError> {
        match prefix {
            None => Ok(self
                .frames
                .iter()
                .rev()
                .find_map(|f| f.default.as_deref())
                .unwrap_or("")),
            Some("xml") => Ok(NS_XML),
            Some(p) => self
                .frames
                .iter()
                .rev()
                .find_map(|f| f.prefixes.iter().find(|(k, _)| k == p))
                .map(|(_, uri)| uri.as_str())
                .ok_or_else(|| {
                    XmlError::NotWellFormed(format!("undeclared namespace prefix {p:?}"))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_declarations_shadow_outer_ones() {
        let mut s = Scopes::default();
        assert_eq!(s.resolve(None), Ok(""));
        s.push(
            Some("jabber:client".into()),
            vec![("stream".into(), "urn:s".into())],
        );
        s.push(None, vec![("stream".into(), "urn:t".into())]);
        assert_eq!(s.resolve(None), Ok("jabber:client"));
        assert_eq!(s.resolve(Some("stream")), Ok("urn:t"));
        assert_eq!(s.resolve(Some("xml")), Ok(NS_XML));
        assert!(s.resolve(Some("nope")).is_err());
        s.push(Some(String::new()), Vec::new());
        assert_eq!(s.resolve(None), Ok(""), "xmlns='' undeclares the default");
        s.pop();
        s.pop();
        assert_eq!(s.resolve(Some("stream")), Ok("urn:s"));
    }
}
