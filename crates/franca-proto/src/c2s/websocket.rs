//! RFC 7395 framing for [`C2sStream`](super::C2sStream): XMPP over WebSocket.
//!
//! Over WebSocket every text message is one complete XML document — `<open/>` or `<close/>`
//! in `urn:ietf:params:xml:ns:xmpp-framing`, or a single stanza or nonza that declares its own
//! namespace — instead of one long document per direction. Negotiation (SASL, restarts,
//! binding) is the RFC 6120 state machine in `c2s.rs`; this module only reads a message into
//! an [`Element`] and writes elements as standalone messages.
//!
//! A message is read with `franca_xml::read_document`, as `bosh::body` reads a request body:
//! the byte, depth and attribute limits are the ones TCP clients get, and DTDs, entities, PIs
//! and comments are refused by the same reader.

use std::borrow::Cow;

use franca_xml::{Element, Limits, Node, XmlError, escape_attr, escape_text};

use crate::ns::{NS_CLIENT, NS_FRAMING, NS_STREAMS};

/// `xmlns='jabber:client'` as [`with_client_ns`] inserts it.
const CLIENT_NS_ATTR: &str = " xmlns='jabber:client'";

/// Reads one WebSocket message: its single root element, or `None` for a message of only
/// whitespace. `limits.max_stanza_bytes` bounds the whole message. Unprefixed elements are
/// read in `jabber:client`, the content namespace of the TCP stream this framing replaces, so
/// a client that leaves a stanza unqualified is read as it would be over TCP (Prosody is
/// equally lenient); `<open/>` and `<close/>` must still name the framing namespace.
pub(super) fn read_frame(frame: &[u8], limits: Limits) -> Result<Option<Element>, XmlError> {
    franca_xml::read_document(frame, limits, Some(NS_CLIENT))
}

/// Our `<open/>` (RFC 7395 §3.4), the counterpart of the TCP stream header.
pub(super) fn open_element(from: &str, id: &str) -> String {
    Element::new("open", NS_FRAMING)
        .with_attr("from", from)
        .with_attr("id", id)
        .with_attr("version", "1.0")
        .with_attr("xml:lang", "en")
        .to_xml()
}

/// Our `<close/>` (RFC 7395 §3.6), the counterpart of `</stream:stream>`.
pub(super) fn close_element() -> String {
    Element::new("close", NS_FRAMING).to_xml()
}

/// Serialises a top-level element as a standalone message: every namespace declared on it.
///
/// `<features/>` and `<error/>` of the streams namespace get the `stream:` prefix, declared on
/// the element, as in RFC 7395's examples; some clients look for `stream:features` by name.
pub(super) fn frame_xml(el: &Element) -> String {
    let plain_attrs = el.attrs.iter().all(|(k, _)| !k.starts_with('{'));
    if el.ns != NS_STREAMS || !plain_attrs {
        return el.to_xml();
    }
    let mut out = String::with_capacity(128);
    out.push_str("<stream:");
    out.push_str(&el.name);
    out.push_str(" xmlns:stream='");
    out.push_str(NS_STREAMS);
    out.push('\'');
    for (k, v) in &el.attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("='");
        escape_attr(v, &mut out);
        out.push('\'');
    }
    if el.children.is_empty() {
        out.push_str("/>");
        return out;
    }
    out.push('>');
    for child in &el.children {
        match child {
            // A prefix declares no default namespace, so each child names its own.
            Node::Element(c) => c.write_to(&mut out, ""),
            Node::Text(t) => escape_text(t, &mut out),
        }
    }
    out.push_str("</stream:");
    out.push_str(&el.name);
    out.push('>');
    out
}

/// Gives a stanza serialised for a `jabber:client` stream — with no `xmlns` on its root, as
/// the session queue holds it — its own namespace declaration, so that it can travel alone in
/// a WebSocket message (or a BOSH body): ` xmlns='jabber:client'` goes right after the root's
/// name, and the children that inherited the stream's namespace now inherit it from the root.
///
/// `xml` comes back unchanged when its root already declares a default namespace, when the
/// root name has a prefix (a default namespace would not apply to it), or when it does not
/// start with a complete start tag.
pub fn with_client_ns(xml: &str) -> Cow<'_, str> {
    let Some(at) = insertion_point(xml.as_bytes()) else {
        return Cow::Borrowed(xml);
    };
    let (head, tail) = xml.split_at(at);
    let mut out = String::with_capacity(xml.len() + CLIENT_NS_ATTR.len());
    out.push_str(head);
    out.push_str(CLIENT_NS_ATTR);
    out.push_str(tail);
    Cow::Owned(out)
}

/// Where [`with_client_ns`] puts the declaration in `xml` (the end of the root's name), or
/// `None` when it leaves `xml` unchanged; a shared fan-out stanza decides once with it.
pub fn client_ns_insertion(xml: &str) -> Option<usize> {
    insertion_point(xml.as_bytes())
}

/// Where the declaration goes (the end of the root's name), or `None` if it must not be added.
fn insertion_point(b: &[u8]) -> Option<usize> {
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let ends_name = |c: u8| is_space(c) || c == b'/' || c == b'>';
    let rest = b.strip_prefix(b"<")?;
    let name_end = 1 + rest.iter().position(|&c| ends_name(c))?;
    let name = b.get(1..name_end)?;
    // `<?`, `<!` and `</` open no element; a prefixed name is outside the default namespace.
    if name.is_empty() || name.contains(&b':') || matches!(name.first(), Some(b'?' | b'!' | b'/')) {
        return None;
    }
    let skip_spaces = |mut i: usize| {
        while b.get(i).copied().is_some_and(is_space) {
            i += 1;
        }
        i
    };
    let mut i = name_end;
    loop {
        i = skip_spaces(i);
        if matches!(b.get(i)?, b'/' | b'>') {
            return Some(name_end);
        }
        let attr_start = i;
        while b
            .get(i)
            .copied()
            .is_some_and(|c| c != b'=' && !ends_name(c))
        {
            i += 1;
        }
        let attr = b.get(attr_start..i)?;
        i = skip_spaces(i);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_spaces(i + 1);
        let quote = *b.get(i)?;
        if quote != b'\'' && quote != b'"' {
            return None;
        }
        let len = b.get(i + 1..)?.iter().position(|&c| c == quote)?;
        if attr == b"xmlns" {
            return None;
        }
        // Past the closing quote.
        i += len + 2;
    }
}

#[cfg(test)]
mod tests {
    //! Transcripts over WebSocket framing, named after the RFC 7395 sections whose rules they
    //! check, and the pieces they are built from.
    #![allow(clippy::unwrap_used)]

    use super::super::tests::{config, keys, messages, run, scram_client, tls_binding};
    use super::super::{Action, C2sOptions, C2sStream, Framing};
    use super::*;
    use crate::ns::NS_CLIENT;
    use crate::sasl::ChannelBinding;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    const OPEN: &str = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' \
        version='1.0'/>";
    const CLOSE: &str = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
    const FEATURES: &str = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>";

    fn ws(
        allow_plaintext: bool,
        secure: bool,
        channel_binding: Option<ChannelBinding>,
    ) -> C2sStream {
        C2sStream::with_options(
            config(allow_plaintext),
            C2sOptions {
                framing: Framing::WebSocket,
                secure,
                channel_binding,
            },
        )
    }

    /// Every message we write must stand alone: one element, all namespaces declared. Read
    /// without the lenient `jabber:client` default, so a missing `xmlns` shows up here.
    fn assert_standalone(actions: &[Action]) {
        for m in messages(actions) {
            let el = read_strict(m);
            assert!(!el.ns.is_empty(), "no namespace on {m}");
        }
    }

    fn read_strict(m: &str) -> Element {
        franca_xml::read_document(m.as_bytes(), Limits::default(), None)
            .unwrap_or_else(|e| panic!("{m} is not one element: {e}"))
            .unwrap_or_else(|| panic!("{m} is empty"))
    }

    fn closed_with(actions: &[Action], condition: &str) {
        let m = messages(actions);
        let n = m.len();
        assert!(n >= 2, "{m:?}");
        assert!(
            m[n - 2].starts_with("<stream:error xmlns:stream='http://etherx.jabber.org/streams'>")
                && m[n - 2].contains(&format!(
                    "<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                )),
            "{m:?}"
        );
        assert_eq!(m[n - 1], CLOSE, "{m:?}");
        assert!(matches!(actions.last(), Some(Action::Close)), "{actions:?}");
        assert_standalone(actions);
    }

    #[test]
    fn rfc7395_3_4_open_is_answered_by_open_and_features_without_starttls() {
        let mut s = ws(false, true, None);
        let actions = run(&mut s, OPEN);
        let m = messages(&actions);
        assert_eq!(m.len(), 2, "one message per element: {m:?}");
        assert!(
            m[0].starts_with(
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.org' id='"
            ) && m[0].ends_with("' version='1.0' xml:lang='en'/>"),
            "{}",
            m[0]
        );
        assert!(m[1].starts_with(FEATURES), "{}", m[1]);
        assert!(m[1].ends_with("</stream:features>"), "{}", m[1]);
        assert!(m[1].contains("<mechanism>PLAIN</mechanism>"), "{}", m[1]);
        assert!(
            m[1].contains("<mechanism>SCRAM-SHA-256</mechanism>"),
            "{}",
            m[1]
        );
        // §3.9: no STARTTLS; and no -PLUS without channel bindings.
        assert!(!m[1].contains("starttls"), "{}", m[1]);
        assert!(!m[1].contains("-PLUS"), "{}", m[1]);
        assert_standalone(&actions);
        let features = read_strict(m[1]);
        assert!(features.is("features", NS_STREAMS));
        assert!(features.has_child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl"));
    }

    #[test]
    fn rfc7395_3_4_open_with_channel_binding_offers_plus() {
        let mut s = ws(false, true, Some(tls_binding()));
        let m = messages(&run(&mut s, OPEN)).concat();
        assert!(m.contains("SCRAM-SHA-256-PLUS"), "{m}");
        assert!(m.contains("<channel-binding type='tls-exporter'/>"), "{m}");
    }

    #[test]
    fn rfc7395_3_9_starttls_is_not_offered_and_refused() {
        // A plaintext WebSocket (allowed for benchmarks) still gets no STARTTLS.
        let mut s = ws(true, false, None);
        let m = messages(&run(&mut s, OPEN)).concat();
        assert!(!m.contains("starttls"), "{m}");
        assert!(m.contains("<mechanism>PLAIN</mechanism>"), "{m}");
        let actions = run(
            &mut s,
            "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::StartTls)));
        closed_with(&actions, "policy-violation");
        // Without TLS below and without the opt-in nothing can be negotiated at all.
        let mut s = ws(false, false, None);
        let actions = run(&mut s, OPEN);
        closed_with(&actions, "policy-violation");
        assert!(messages(&actions)[0].starts_with("<open "));
    }

    #[test]
    fn rfc7395_3_7_scram_then_restart_with_open_then_bind_and_a_stanza() {
        let mut s = ws(false, true, Some(tls_binding()));
        run(&mut s, OPEN);
        let actions = scram_client(&mut s, "secret", "n,,", b"");
        let m = messages(&actions);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"),
            "{m:?}"
        );
        assert!(actions.iter().any(
            |a| matches!(a, Action::Authenticated { account } if account == "juliet@example.org")
        ));
        // The restart is a new <open/>, answered by a new <open/> and the bind features.
        let actions = run(&mut s, OPEN);
        let m = messages(&actions);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("<open "), "{m:?}");
        assert!(m[1].starts_with(FEATURES), "{m:?}");
        assert!(
            m[1].contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
            "{m:?}"
        );
        assert_standalone(&actions);
        let actions = run(
            &mut s,
            "<iq xmlns='jabber:client' type='set' id='b1'>\
             <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>",
        );
        assert!(
            matches!(actions.last(), Some(Action::Bind { resource: Some(r) }) if r == "balcony")
        );
        s.bound(Ok("juliet@example.org/balcony"));
        let actions = run(&mut s, "");
        assert_eq!(
            messages(&actions),
            ["<iq xmlns='jabber:client' type='result' id='b1'>\
              <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
              <jid>juliet@example.org/balcony</jid></bind></iq>"]
        );
        assert!(s.is_established());
        let actions = run(
            &mut s,
            "<message xmlns='jabber:client' to='romeo@example.org'><body>hi</body></message>",
        );
        assert!(
            matches!(&actions[..], [Action::Stanza(m)] if m.is("message", NS_CLIENT) && m.has_child("body", NS_CLIENT)),
            "{actions:?}"
        );
        // Answers the transport asks for are framed too.
        s.send_element(&Element::new("iq", NS_CLIENT).with_attr("type", "get"));
        assert_eq!(
            messages(&run(&mut s, "")),
            ["<iq xmlns='jabber:client' type='get'/>"]
        );
    }

    #[test]
    fn rfc7395_3_3_3_plain_login_in_one_message() {
        let mut s = ws(false, true, None);
        run(&mut s, OPEN);
        let actions = run(
            &mut s,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                B64.encode("\0juliet\0secret")
            ),
        );
        assert!(
            matches!(actions.last(), Some(Action::Credentials { account, .. }) if account == "juliet@example.org")
        );
        s.provide_credentials("juliet@example.org", Some(keys("secret")));
        assert_eq!(
            messages(&run(&mut s, "")),
            ["<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"]
        );
        assert_eq!(s.account(), Some("juliet@example.org"));
    }

    #[test]
    fn rfc7395_next_action_leaves_a_message_alone_while_a_request_is_outstanding() {
        let mut s = ws(false, true, None);
        run(&mut s, OPEN);
        let auth = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            B64.encode("\0juliet\0secret")
        );
        run(&mut s, &auth);
        let mut next = CLOSE.as_bytes();
        assert!(s.next_action(&mut next).is_none());
        assert_eq!(next, CLOSE.as_bytes(), "not consumed before the answer");
        s.provide_credentials("juliet@example.org", Some(keys("secret")));
        let mut actions = Vec::new();
        while let Some(a) = s.next_action(&mut next) {
            actions.push(a);
        }
        assert!(next.is_empty());
        assert_eq!(messages(&actions).last(), Some(&CLOSE));
        assert!(s.is_closed());
    }

    #[test]
    fn rfc7395_3_6_close_is_answered_by_close() {
        let mut s = ws(false, true, None);
        run(&mut s, OPEN);
        let actions = run(&mut s, CLOSE);
        assert_eq!(messages(&actions), [CLOSE]);
        assert!(matches!(actions.last(), Some(Action::Close)));
        assert!(s.is_closed());
        // Closing from our side writes <close/> as well.
        let mut s = ws(false, true, None);
        run(&mut s, OPEN);
        s.close();
        assert_eq!(messages(&run(&mut s, "")), [CLOSE]);
    }

    #[test]
    fn rfc7395_3_5_stream_errors_are_an_error_message_then_close() {
        let mut s = ws(false, true, None);
        let actions = run(&mut s, &OPEN.replace("example.org", "other.example"));
        let m = messages(&actions);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].starts_with("<open "), "{m:?}");
        closed_with(&actions, "host-unknown");
        assert!(s.is_closed());
        // An error from the transport (e.g. shutdown) is framed the same way.
        let mut s = ws(false, true, None);
        run(&mut s, OPEN);
        s.fail(crate::errors::StreamError::SystemShutdown, None);
        let actions = run(&mut s, "");
        assert_eq!(
            messages(&actions),
            [
                "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>\
                 <system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                CLOSE
            ]
        );
    }

    #[test]
    fn rfc7395_3_3_2_open_must_be_in_the_framing_namespace() {
        for bad in [
            "<open xmlns='jabber:client' to='example.org' version='1.0'/>",
            "<open to='example.org' version='1.0'/>",
            "<message xmlns='jabber:client' to='example.org'/>",
        ] {
            let mut s = ws(false, true, None);
            let actions = run(&mut s, bad);
            assert!(messages(&actions)[0].starts_with("<open "), "{bad}");
            closed_with(&actions, "invalid-namespace");
        }
        // A TCP stream header is not a complete document, let alone an <open/>.
        let mut s = ws(false, true, None);
        let header = "<stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>";
        closed_with(&run(&mut s, header), "not-well-formed");
    }

    #[test]
    fn rfc7395_3_3_2_open_needs_to_and_version_1_0() {
        for (open, condition) in [
            (OPEN.replace("1.0", "0.9"), "unsupported-version"),
            (OPEN.replace("1.0", "2.0"), "unsupported-version"),
            (OPEN.replace(" version='1.0'", ""), "unsupported-version"),
            (OPEN.replace(" to='example.org'", ""), "host-unknown"),
        ] {
            let mut s = ws(false, true, None);
            closed_with(&run(&mut s, &open), condition);
        }
    }

    #[test]
    fn rfc7395_3_7_open_outside_a_restart_is_refused() {
        let mut s = ws(false, true, None);
        run(&mut s, OPEN);
        closed_with(&run(&mut s, OPEN), "bad-format");
    }

    #[test]
    fn rfc7395_3_3_3_a_message_holds_exactly_one_element() {
        for (bad, condition) in [
            (
                "<message xmlns='jabber:client'/><message xmlns='jabber:client'/>",
                "not-well-formed",
            ),
            (
                "<message xmlns='jabber:client'/>trailing",
                "not-well-formed",
            ),
            ("<message xmlns='jabber:client'><body>", "not-well-formed"),
            ("just text", "not-well-formed"),
            (
                "<message xmlns='jabber:client'/></ws-frame:stream>",
                "not-well-formed",
            ),
            (
                "</ws-frame:stream><ws-frame:stream xmlns:ws-frame='http://etherx.jabber.org/streams'>",
                "not-well-formed",
            ),
            (
                "<?evil pi?><message xmlns='jabber:client'/>",
                "restricted-xml",
            ),
            (
                "<message xmlns='jabber:client'/><!-- c -->",
                "restricted-xml",
            ),
            (
                "<!DOCTYPE m [<!ENTITY x 'y'>]><message xmlns='jabber:client'/>",
                "restricted-xml",
            ),
            (
                "<message xmlns='jabber:client'>&x;</message>",
                "restricted-xml",
            ),
        ] {
            let mut s = ws(false, true, None);
            run(&mut s, OPEN);
            let actions = run(&mut s, bad);
            let m = messages(&actions);
            assert!(
                m.len() == 2 && m[0].contains(&format!("<{condition} ")),
                "{bad}: {m:?}"
            );
            closed_with(&actions, condition);
        }
    }

    #[test]
    fn rfc7395_3_3_3_oversized_or_deep_messages_are_policy_violations() {
        let mut s = ws(false, true, None);
        run(&mut s, OPEN);
        // The test limit is 4096 bytes; the check is on the whole message, before parsing.
        let big = format!(
            "<message xmlns='jabber:client'><body>{}</body></message>",
            "x".repeat(5000)
        );
        closed_with(&run(&mut s, &big), "policy-violation");
        let mut s = ws(false, true, None);
        run(&mut s, OPEN);
        let deep = format!(
            "<message xmlns='jabber:client'>{}{}</message>",
            "<a>".repeat(10),
            "</a>".repeat(10)
        );
        closed_with(&run(&mut s, &deep), "policy-violation");
    }

    #[test]
    fn rfc7395_3_3_3_whitespace_declaration_and_unqualified_stanzas_are_tolerated() {
        let mut s = ws(false, true, None);
        assert!(run(&mut s, " \r\n").is_empty());
        let m = messages(&run(&mut s, &format!("<?xml version='1.0'?>{OPEN}"))).concat();
        assert!(m.contains(FEATURES), "{m}");
        // Unqualified stanzas read as jabber:client, as they would over TCP: before
        // authentication that is a not-authorized, not an unknown element.
        let actions = run(
            &mut s,
            "<message to='a@example.org'><body>x</body></message>",
        );
        closed_with(&actions, "not-authorized");
    }

    #[test]
    fn read_frame_gives_the_root_with_resolved_namespaces() {
        let el = read_frame(
            b"<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
            Limits::default(),
        )
        .unwrap()
        .unwrap();
        assert!(el.is("iq", NS_CLIENT));
        assert!(el.has_child("ping", "urn:xmpp:ping"));
        let open = read_frame(OPEN.as_bytes(), Limits::default())
            .unwrap()
            .unwrap();
        assert!(open.is("open", NS_FRAMING));
        assert_eq!(open.attr("to"), Some("example.org"));
        assert_eq!(read_frame(b"  ", Limits::default()), Ok(None));
    }

    #[test]
    fn open_close_and_streams_elements_serialise_standalone() {
        assert_eq!(
            open_element("example.org", "a'b"),
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.org' \
             id='a&apos;b' version='1.0' xml:lang='en'/>"
        );
        assert_eq!(close_element(), CLOSE);
        assert_eq!(
            frame_xml(&Element::new("features", NS_STREAMS)),
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>"
        );
        let msg = Element::new("message", NS_CLIENT)
            .with_child(Element::new("body", NS_CLIENT).with_text("a<b"));
        assert_eq!(
            frame_xml(&msg),
            "<message xmlns='jabber:client'><body>a&lt;b</body></message>"
        );
    }

    #[test]
    fn with_client_ns_inserts_after_the_name_only_where_missing() {
        for (input, expected) in [
            ("<message>", "<message xmlns='jabber:client'>"),
            ("<message/>", "<message xmlns='jabber:client'/>"),
            (
                "<iq type='result' id='x'><query xmlns='jabber:iq:roster'/></iq>",
                "<iq xmlns='jabber:client' type='result' id='x'><query xmlns='jabber:iq:roster'/></iq>",
            ),
            (
                "<presence\n from='a@b/c'\tto=\"d@e\"/>",
                "<presence xmlns='jabber:client'\n from='a@b/c'\tto=\"d@e\"/>",
            ),
            // A value that looks like a declaration, or holds quotes and brackets, is a value.
            (
                "<message id=\"xmlns='x' >\" to='a@b'><body>xmlns='y'</body></message>",
                "<message xmlns='jabber:client' id=\"xmlns='x' >\" to='a@b'><body>xmlns='y'</body></message>",
            ),
            // A prefixed declaration is not the default namespace.
            (
                "<message xmlns:x='urn:x'/>",
                "<message xmlns='jabber:client' xmlns:x='urn:x'/>",
            ),
        ] {
            let out = with_client_ns(input);
            assert!(matches!(out, Cow::Owned(_)), "{input}");
            assert_eq!(out, expected, "{input}");
        }
        for unchanged in [
            "<message xmlns='jabber:client' to='a@b'/>",
            "<iq type='get' xmlns=\"jabber:client\"/>",
            "<iq type='get' xmlns = 'jabber:server'/>",
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>",
            "",
            "message",
            "<",
            "<message",
            "<message to='a",
            "<message to=x>",
            "</message>",
            "<?xml version='1.0'?>",
            "<!-- c -->",
        ] {
            assert!(
                matches!(with_client_ns(unchanged), Cow::Borrowed(s) if s == unchanged),
                "{unchanged}"
            );
        }
        // What it produces reads back as jabber:client all the way down.
        let el = read_strict(&with_client_ns(
            "<message to='a@b'><body>hi</body><x xmlns='urn:x'/></message>",
        ));
        assert!(el.is("message", NS_CLIENT) && el.has_child("body", NS_CLIENT));
        assert!(el.has_child("x", "urn:x"));
    }
}
