//! Property test: any tree we can build serialises to XML that reads back equal.

use proptest::prelude::*;

use crate::element::{Element, Node};
use crate::reader::{Event, Limits, StreamReader};
use crate::writer::NS_STREAMS;

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a",
        "message",
        "body",
        "x-y",
        "n.1",
        "_u",
        "h\u{e9}llo",
    ])
    .prop_map(String::from)
}

fn ns() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "jabber:client",
        "urn:x",
        "urn:a'b&c<d",
        "http://e/\"q\"",
    ])
    .prop_map(String::from)
}

/// Plain, `xml:` and foreign-namespace keys, including a foreign key in the element's
/// own default namespace (still needs a prefix: unprefixed attributes have no namespace).
fn attr_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "to",
        "id",
        "xml:lang",
        "{urn:x}a",
        "{urn:y}b",
        "{urn:x}c",
        "{jabber:client}d",
        "{urn:a'b&c<d}e",
    ])
    .prop_map(String::from)
}

/// Characters XML 1.0 can carry, biased towards the ones that need escaping.
fn text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '&',
        '<',
        '>',
        '"',
        '\'',
        '\r',
        '\n',
        '\t',
        ']',
        ' ',
        '\u{e9}',
        '\u{1f600}',
        '\u{fffd}',
    ]);
    let any_valid = any::<char>().prop_filter("not an XML Char", |c| {
        !matches!(*c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
    });
    prop::collection::vec(prop_oneof![special, any_valid], 0..12)
        .prop_map(|cs| cs.into_iter().collect())
}

fn build(name: String, ns: String, attrs: Vec<(String, String)>, children: Vec<Node>) -> Element {
    let mut e = Element::new(name, ns);
    for (k, v) in attrs {
        e.set_attr(k, v);
    }
    // Going through push/push_text keeps the tree normalised (no empty or adjacent text
    // nodes), which is the form the reader produces.
    for c in children {
        match c {
            Node::Element(c) => e.push(c),
            Node::Text(t) => e.push_text(t),
        }
    }
    e
}

fn element() -> impl Strategy<Value = Element> {
    let attrs = || prop::collection::vec((attr_key(), text()), 0..4);
    let leaf = (name(), ns(), attrs()).prop_map(|(n, ns, a)| build(n, ns, a, Vec::new()));
    leaf.prop_recursive(4, 48, 5, move |inner| {
        let child = prop_oneof![inner.prop_map(Node::Element), text().prop_map(Node::Text)];
        (name(), ns(), attrs(), prop::collection::vec(child, 0..5))
            .prop_map(|(n, ns, a, c)| build(n, ns, a, c))
    })
}

fn read_back(header: &str, xml: &str, chunk: usize) -> Vec<Event> {
    let input = format!("{header}{xml}");
    let mut r = StreamReader::new(Limits::default());
    let mut evs = Vec::new();
    for mut piece in input.as_bytes().chunks(chunk) {
        loop {
            match r.feed(&mut piece) {
                Ok(Some(ev)) => evs.push(ev),
                Ok(None) => break,
                Err(e) => panic!("{e} while reading {xml}"),
            }
        }
    }
    evs
}

proptest! {
    #[test]
    fn serialised_trees_read_back_equal(e in element(), chunk in 1usize..64) {
        // As a stanza inside a jabber:client stream…
        let header = format!("<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}'>");
        let evs = read_back(&header, &e.to_xml_in("jabber:client"), chunk);
        prop_assert_eq!(evs.get(1), Some(&Event::Stanza(e.clone())));
        // …and standalone, where to_xml must declare everything itself.
        let header = format!("<stream:stream xmlns:stream='{NS_STREAMS}'>");
        let evs = read_back(&header, &e.to_xml(), chunk);
        prop_assert_eq!(evs.get(1), Some(&Event::Stanza(e)));
    }
}
