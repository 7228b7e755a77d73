//! Serialisation: escaping, elements and the stream header.
//!
//! Output uses single-quoted attributes and declares namespaces with a default `xmlns`
//! only where the namespace changes, which is what XMPP peers expect inside a stream.

use std::fmt::Write as _;

use crate::element::{Element, Node};

/// The namespace of the `<stream:stream>` element (RFC 6120 §4.8.1).
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// The namespace bound to the `xml` prefix by the XML spec itself.
pub(crate) const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// The opening of a stream we send: XML declaration plus `<stream:stream …>`.
pub fn stream_header(ns: &str, from: &str, to: Option<&str>, id: &str) -> String {
    let mut out = String::with_capacity(200);
    out.push_str("<?xml version='1.0'?><stream:stream xmlns='");
    escape_attr(ns, &mut out);
    out.push_str("' xmlns:stream='");
    out.push_str(NS_STREAMS);
    out.push_str("' id='");
    escape_attr(id, &mut out);
    out.push_str("' from='");
    escape_attr(from, &mut out);
    if let Some(to) = to {
        out.push_str("' to='");
        escape_attr(to, &mut out);
    }
    out.push_str("' version='1.0' xml:lang='en'>");
    out
}

/// Characters XML 1.0 cannot carry at all, not even as character references.
/// They are replaced rather than emitted, so one bad string cannot break a whole stream.
fn is_forbidden(c: char) -> bool {
    matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// Escapes an attribute value for use inside single *or* double quotes.
///
/// Tab, newline and carriage return become character references because a parser
/// would otherwise normalise them to spaces and the value would not round-trip.
pub fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c if is_forbidden(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// Escapes character data. `\r` becomes a reference because parsers normalise line ends.
pub fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c if is_forbidden(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// Splits an attribute key `"{uri}local"` into its parts; `None` for plain keys.
pub(crate) fn split_ns_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix('{')?;
    let end = rest.find('}')?;
    Some((&rest[..end], &rest[end + 1..]))
}

impl Element {
    /// Appends this element to `out`, declaring `xmlns` only when `ns` differs from the
    /// namespace in scope (`parent_ns`).
    ///
    /// Names must be valid XML names (the reader only ever produces such); attribute keys in
    /// foreign namespaces get prefixes `ns0`, `ns1`, … declared on this element.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns='");
            escape_attr(&self.ns, out);
            out.push('\'');
        }
        // Prefixes are chosen per element; a small Vec beats a map for the usual 0–2 URIs.
        let mut prefixes: Vec<&str> = Vec::new();
        for (k, v) in &self.attrs {
            out.push(' ');
            match split_ns_key(k) {
                Some((uri, local)) if uri == NS_XML => {
                    out.push_str("xml:");
                    out.push_str(local);
                }
                Some((uri, local)) if !uri.is_empty() => {
                    let idx = match prefixes.iter().position(|p| *p == uri) {
                        Some(i) => i,
                        None => {
                            prefixes.push(uri);
                            // Writing to a String cannot fail.
                            let _ = write!(out, "xmlns:ns{}='", prefixes.len() - 1);
                            escape_attr(uri, out);
                            out.push_str("' ");
                            prefixes.len() - 1
                        }
                    };
                    let _ = write!(out, "ns{idx}:{local}");
                }
                Some((_, local)) => out.push_str(local),
                None => out.push_str(k),
            }
            out.push_str("='");
            escape_attr(v, out);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_text(t, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// Serialises as a standalone document fragment (always declares `xmlns` if non-empty).
    pub fn to_xml(&self) -> String {
        self.to_xml_in("")
    }

    /// Serialises as if inside a parent whose default namespace is `parent_ns`,
    /// e.g. a stanza inside a `jabber:client` stream.
    pub fn to_xml_in(&self, parent_ns: &str) -> String {
        let mut out = String::new();
        self.write_to(&mut out, parent_ns);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let mut a = String::new();
        escape_attr("a&b<c>d\"e'f\tg\nh\ri\u{1}", &mut a);
        assert_eq!(
            a,
            "a&amp;b&lt;c&gt;d&quot;e&apos;f&#x9;g&#xA;h&#xD;i\u{fffd}"
        );
        let mut t = String::new();
        escape_text("a&b<c>d\"e'\r]]>", &mut t);
        assert_eq!(t, "a&amp;b&lt;c&gt;d\"e'&#xD;]]&gt;");
    }

    #[test]
    fn namespaces_only_where_they_change() {
        let e = Element::new("message", "jabber:client")
            .with_attr("to", "a@b")
            .with_child(Element::new("body", "jabber:client").with_text("1 < 2"))
            .with_child(Element::new("x", "urn:x"));
        assert_eq!(
            e.to_xml_in("jabber:client"),
            "<message to='a@b'><body>1 &lt; 2</body><x xmlns='urn:x'/></message>"
        );
        assert_eq!(
            e.to_xml(),
            "<message xmlns='jabber:client' to='a@b'><body>1 &lt; 2</body><x xmlns='urn:x'/></message>"
        );
        // A child without namespace inside a namespaced parent must undeclare the default.
        let e = Element::new("a", "urn:a").with_child(Element::new("b", ""));
        assert_eq!(e.to_xml(), "<a xmlns='urn:a'><b xmlns=''/></a>");
    }

    #[test]
    fn foreign_attributes_get_prefixes() {
        let e = Element::new("a", "urn:a")
            .with_attr("xml:lang", "en")
            .with_attr("{urn:x}p", "1")
            .with_attr("{urn:y}q", "2")
            .with_attr("{urn:x}r", "3");
        assert_eq!(
            e.to_xml(),
            "<a xmlns='urn:a' xml:lang='en' xmlns:ns0='urn:x' ns0:p='1' xmlns:ns1='urn:y' ns1:q='2' ns0:r='3'/>"
        );
    }

    #[test]
    fn header() {
        assert_eq!(
            stream_header("jabber:client", "example.com", Some("u@x'y"), "abc"),
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='example.com' \
             to='u@x&apos;y' version='1.0' xml:lang='en'>"
        );
    }
}
