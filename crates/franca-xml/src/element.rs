//! A small owned XML tree.
//!
//! Namespaces are stored as resolved URIs, never as prefixes, so two trees compare equal
//! whatever prefixes the peer happened to use. Serialisation lives in `writer.rs`.

/// An XML element with its namespace URI, attributes and children.
///
/// Attribute keys are plain local names (`"to"`), `"xml:lang"` style keys for the `xml`
/// namespace, and `"{uri}local"` for any other namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

/// A child of an [`Element`]: another element or a run of character data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Element {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder form of [`Element::set_attr`].
    #[must_use]
    pub fn with_attr(mut self, k: impl Into<String>, v: impl Into<String>) -> Element {
        self.set_attr(k, v);
        self
    }

    #[must_use]
    pub fn with_child(mut self, c: Element) -> Element {
        self.push(c);
        self
    }

    #[must_use]
    pub fn with_text(mut self, t: impl Into<String>) -> Element {
        self.push_text(t);
        self
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// Sets an attribute, replacing an existing value in place (keeps attribute order stable).
    pub fn set_attr(&mut self, k: impl Into<String>, v: impl Into<String>) {
        let k = k.into();
        let v = v.into();
        match self.attrs.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => self.attrs.push((k, v)),
        }
    }

    pub fn remove_attr(&mut self, k: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(key, _)| key == k)?;
        Some(self.attrs.remove(pos).1)
    }

    /// The first child element with this name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.child(name, ns).is_some()
    }

    /// Child elements only, in document order (text nodes are skipped).
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn first_element(&self) -> Option<&Element> {
        self.elements().next()
    }

    /// Removes and returns the first child element with this name and namespace.
    pub fn remove_child(&mut self, name: &str, ns: &str) -> Option<Element> {
        let pos = self
            .children
            .iter()
            .position(|n| matches!(n, Node::Element(e) if e.is(name, ns)))?;
        match self.children.remove(pos) {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        }
    }

    pub fn push(&mut self, c: Element) {
        self.children.push(Node::Element(c));
    }

    /// Appends text, merging with a preceding text node so that trees built in pieces
    /// compare equal to the same tree read back from XML (the reader also merges).
    pub fn push_text(&mut self, t: impl Into<String>) {
        let t = t.into();
        if t.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(prev)) => prev.push_str(&t),
            _ => self.children.push(Node::Text(t)),
        }
    }

    /// Concatenation of the direct text children.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_and_accessors() {
        let mut e = Element::new("message", "jabber:client")
            .with_attr("to", "a@b")
            .with_attr("to", "c@d")
            .with_child(Element::new("body", "jabber:client").with_text("hi"))
            .with_text("x")
            .with_text("y");
        assert_eq!(e.attr("to"), Some("c@d"));
        assert_eq!(e.attrs.len(), 1);
        assert!(e.has_child("body", "jabber:client"));
        assert!(!e.has_child("body", "other"));
        assert_eq!(
            e.child("body", "jabber:client").map(Element::text),
            Some("hi".into())
        );
        assert_eq!(e.text(), "xy");
        assert_eq!(e.children.len(), 2, "adjacent text is merged");
        assert_eq!(e.first_element().map(|c| c.name.as_str()), Some("body"));
        if let Some(b) = e.child_mut("body", "jabber:client") {
            b.set_attr("id", "1");
        }
        assert_eq!(
            e.remove_child("body", "jabber:client")
                .and_then(|mut b| b.remove_attr("id")),
            Some("1".into())
        );
        assert_eq!(e.elements().count(), 0);
        assert_eq!(e.remove_attr("to"), Some("c@d".into()));
        assert_eq!(e.remove_attr("to"), None);
    }
}
