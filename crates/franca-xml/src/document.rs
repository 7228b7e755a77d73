//! Standalone documents: one root element in a buffer of its own, as a WebSocket message
//! (RFC 7395) or a BOSH request body (XEP-0124) carries it, rather than a stanza inside a
//! long-lived stream.
//!
//! The document is read as the one stanza of a synthetic stream, so it gets the same
//! [`StreamReader`] and the same limits (bytes, depth, attributes) as a TCP stanza, and DTDs,
//! entities, PIs and comments are refused the same way.

use crate::element::Element;
use crate::error::XmlError;
use crate::reader::{Event, Limits, StreamReader};

/// The synthetic stream's prefix is unusual so that a document cannot close the wrapper by
/// accident; one that does so on purpose yields an extra event and is refused.
const WRAP_CLOSE: &[u8] = b"</franca-doc:stream>";

/// Reads the single root element of `bytes`, or `None` when there is only whitespace.
///
/// An XML declaration and a UTF-8 byte-order mark may come first. Unprefixed elements are in
/// `default_ns` when given (a WebSocket message may leave `jabber:client` implicit, as a TCP
/// stream does). `limits.max_stanza_bytes` bounds the whole document. Two roots, text beside
/// the root, or a root left open are `NotWellFormed`; a limit is `PolicyViolation`.
pub fn read_document(
    bytes: &[u8],
    limits: Limits,
    default_ns: Option<&str>,
) -> Result<Option<Element>, XmlError> {
    if bytes.len() > limits.max_stanza_bytes {
        return Err(XmlError::PolicyViolation(format!(
            "document larger than {} bytes",
            limits.max_stanza_bytes
        )));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let (decl, rest) = split_declaration(bytes)?;
    let mut wrap_open =
        String::from("<franca-doc:stream xmlns:franca-doc='http://etherx.jabber.org/streams'");
    if let Some(ns) = default_ns {
        wrap_open.push_str(" xmlns='");
        crate::escape_attr(ns, &mut wrap_open);
        wrap_open.push('\'');
    }
    wrap_open.push('>');
    let mut reader = StreamReader::new(Limits {
        // The wrapper's own two declarations must fit, whatever the configured limit.
        max_attrs: limits.max_attrs.max(2),
        ..limits
    });
    let mut events = Vec::with_capacity(3);
    for chunk in [decl, wrap_open.as_bytes(), rest] {
        feed_all(&mut reader, chunk, &mut events)?;
    }
    if !reader.is_idle() {
        return Err(XmlError::NotWellFormed(
            "the document does not end with its root element".into(),
        ));
    }
    feed_all(&mut reader, WRAP_CLOSE, &mut events)?;
    let mut events = events.into_iter();
    match (events.next(), events.next(), events.next(), events.next()) {
        (Some(Event::StreamStart(_)), Some(Event::Stanza(el)), Some(Event::StreamEnd), None) => {
            Ok(Some(el))
        }
        (Some(Event::StreamStart(_)), Some(Event::StreamEnd), None, None) => Ok(None),
        _ => Err(one_root()),
    }
}

fn one_root() -> XmlError {
    XmlError::NotWellFormed("a document must hold exactly one root element".into())
}

fn feed_all(
    reader: &mut StreamReader,
    mut input: &[u8],
    events: &mut Vec<Event>,
) -> Result<(), XmlError> {
    loop {
        match reader.feed(&mut input) {
            Ok(Some(ev)) => {
                events.push(ev);
                // Wrapper start, root, wrapper end: a fourth event is a second root (or worse),
                // so stop before a document of many small elements builds them all.
                if events.len() > 3 {
                    return Err(one_root());
                }
            }
            Ok(None) => return Ok(()),
            // Text beside the root is "between stanzas" to the reader, but in a document it
            // makes the document itself not well-formed.
            Err(XmlError::BadFormat(msg)) => return Err(XmlError::NotWellFormed(msg)),
            Err(e) => return Err(e),
        }
    }
}

/// Splits off an XML declaration, which has to stay in front of the wrapper's start tag.
fn split_declaration(bytes: &[u8]) -> Result<(&[u8], &[u8]), XmlError> {
    let is_decl = bytes.starts_with(b"<?xml")
        && bytes
            .get(5)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if !is_decl {
        return Ok((&[], bytes));
    }
    // A declaration is short; do not scan a large document for its end.
    let end = bytes
        .windows(2)
        .take(512)
        .position(|w| w == b"?>")
        .ok_or_else(|| XmlError::NotWellFormed("unterminated XML declaration".into()))?;
    Ok(bytes.split_at(end + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &str) -> Result<Option<Element>, XmlError> {
        read_document(bytes.as_bytes(), Limits::default(), Some("jabber:client"))
    }

    #[test]
    fn one_root_with_declaration_bom_and_default_namespace() {
        let el = read("\u{feff}<?xml version='1.0'?><message to='a@b'><body>hi</body></message>")
            .expect("read")
            .expect("an element");
        assert!(el.is("message", "jabber:client"));
        assert_eq!(read("  \n").expect("read"), None);
    }

    #[test]
    fn not_one_well_formed_root_is_refused() {
        for bad in [
            "<a/><b/>",
            "<a/>text",
            "<a>",
            "<a/></franca-doc:stream><b/>",
            "<?xml version='1.0'",
            "<!DOCTYPE x><a/>",
        ] {
            assert!(read(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn limits_apply_to_the_whole_document() {
        let limits = Limits {
            max_stanza_bytes: 64,
            ..Limits::default()
        };
        let big = format!("<a>{}</a>", "x".repeat(100));
        assert!(matches!(
            read_document(big.as_bytes(), limits, None),
            Err(XmlError::PolicyViolation(_))
        ));
    }
}
