//! XEP-0206 framing for [`C2sStream`](super::C2sStream): XMPP over BOSH.
//!
//! BOSH carries no stream header and no stream elements on the wire. The session creation
//! request (XEP-0206 §3) and every request with `xmpp:restart='true'` (§5) stand for a
//! stream header, and the children of each request `<body/>` are the stanzas and nonzas.
//! `bosh::parse_body` has already read them with the stanza limits, so they are handed over
//! as elements and not read a second time. What the stream writes is one standalone element
//! per [`Action::Write`](super::Action::Write), as over WebSocket, for the transport to put
//! into a response body; our stream header and `</stream:stream>` are never written (the
//! creation response and the terminate body stand for them).
//!
//! The transport calls these between pulls of `next_action` (after it returned `None`),
//! exactly where a TCP transport would feed the next bytes.

use franca_xml::Element;

use super::{C2sStream, State};
use crate::errors::StreamError;

impl C2sStream {
    /// A stream (re)start: the session creation request, or a request with
    /// `xmpp:restart='true'` after authentication. `to` and `version` are the body's `to` and
    /// `xmpp:version` (XEP-0206 §3: without `xmpp:version` the client predates XMPP 1.0
    /// streams, and SASL cannot be offered).
    pub fn bosh_start(&mut self, to: Option<&str>, version: Option<&str>) {
        if self.state != State::Header {
            // As over WebSocket: a restart anywhere else would reset negotiation behind the
            // client's back.
            return self.fail(
                StreamError::BadFormat,
                Some("xmpp:restart is only expected after authentication"),
            );
        }
        let version_ok = version
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse::<u32>().ok())
            .is_some_and(|major| major >= 1);
        self.begin_stream(to, true, version_ok);
    }

    /// One child of a request body, in order.
    pub fn bosh_element(&mut self, el: Element) {
        if self.state == State::Header {
            // After SASL success the client must restart before it binds (XEP-0206 §5).
            return self.fail(
                StreamError::NotAuthorized,
                Some("restart the stream (xmpp:restart='true') after authentication"),
            );
        }
        self.element(el);
    }
}

#[cfg(test)]
mod tests {
    //! Transcripts over BOSH framing, named after the XEP-0206 sections whose rules they
    //! check.
    #![allow(clippy::unwrap_used)]

    use super::super::tests::{config, messages, run, scram_client};
    use super::super::{Action, C2sOptions, C2sStream, Framing};
    use crate::ns::{NS_BIND, NS_CLIENT};
    use franca_xml::{Element, Limits};

    fn bosh(secure: bool) -> C2sStream {
        C2sStream::with_options(
            config(false),
            C2sOptions {
                framing: Framing::Bosh,
                secure,
                channel_binding: None,
            },
        )
    }

    /// Actions until the stream needs more, after `f` handed something over.
    fn drain(s: &mut C2sStream) -> Vec<Action> {
        run(s, "")
    }

    fn read_strict(m: &str) -> Element {
        franca_xml::read_document(m.as_bytes(), Limits::default(), None)
            .unwrap_or_else(|e| panic!("{m} is not one element: {e}"))
            .unwrap_or_else(|| panic!("{m} is empty"))
    }

    #[test]
    fn xep0206_3_creation_gets_features_only_without_header() {
        let mut s = bosh(true);
        s.bosh_start(Some("example.org"), Some("1.0"));
        let actions = drain(&mut s);
        let m = messages(&actions);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"),
            "{}",
            m[0]
        );
        assert!(m[0].contains("<mechanism>PLAIN</mechanism>"), "{}", m[0]);
        assert!(!m[0].contains("starttls"), "{}", m[0]);
        read_strict(m[0]);
    }

    #[test]
    fn xep0206_3_without_xmpp_version_is_unsupported() {
        let mut s = bosh(true);
        s.bosh_start(Some("example.org"), None);
        let actions = drain(&mut s);
        let m = messages(&actions);
        assert_eq!(m.len(), 1, "only the error, no closing tag: {m:?}");
        assert!(m[0].contains("unsupported-version"), "{}", m[0]);
        assert!(matches!(actions.last(), Some(Action::Close)));
    }

    #[test]
    fn xep0206_15_plain_http_from_afar_is_refused() {
        let mut s = bosh(false);
        s.bosh_start(Some("example.org"), Some("1.0"));
        let m = messages(&drain(&mut s)).concat();
        assert!(m.contains("policy-violation"), "{m}");
        assert!(m.contains("https://"), "{m}");
    }

    #[test]
    fn xep0206_5_scram_then_restart_then_bind_and_a_stanza() {
        let mut s = bosh(true);
        s.bosh_start(Some("example.org"), Some("1.0"));
        drain(&mut s);
        // SASL nonzas come as elements like every other child; the byte path (one standalone
        // element per input, as over WebSocket) reads the same.
        let actions = scram_client(&mut s, "secret", "n,,", b"");
        assert!(messages(&actions)[0].starts_with("<success"), "{actions:?}");
        // Before the restart nothing but a restart is expected.
        let mut early = bosh(true);
        early.bosh_start(Some("example.org"), Some("1.0"));
        drain(&mut early);
        scram_client(&mut early, "secret", "n,,", b"");
        early.bosh_element(Element::new("iq", NS_CLIENT));
        let m = messages(&drain(&mut early)).concat();
        assert!(m.contains("not-authorized"), "{m}");

        s.bosh_start(Some("example.org"), Some("1.0"));
        let m = messages(&drain(&mut s)).concat();
        assert!(
            m.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
            "{m}"
        );
        s.bosh_element(
            Element::new("iq", NS_CLIENT)
                .with_attr("type", "set")
                .with_attr("id", "b1")
                .with_child(Element::new("bind", NS_BIND)),
        );
        let actions = drain(&mut s);
        assert!(matches!(
            actions.last(),
            Some(Action::Bind { resource: None })
        ));
        s.bound(Ok("juliet@example.org/r"));
        let m = messages(&drain(&mut s)).concat();
        assert!(
            m.starts_with("<iq xmlns='jabber:client' type='result' id='b1'>"),
            "{m}"
        );
        // RFC 6121 App. E: the optional RFC 3921 session request (strophe.js sends it) succeeds
        // without reaching the router.
        s.bosh_element(
            Element::new("iq", NS_CLIENT)
                .with_attr("type", "set")
                .with_attr("id", "s1")
                .with_child(Element::new(
                    "session",
                    "urn:ietf:params:xml:ns:xmpp-session",
                )),
        );
        assert_eq!(
            messages(&drain(&mut s)),
            ["<iq xmlns='jabber:client' type='result' id='s1'/>"]
        );
        s.bosh_element(Element::new("message", NS_CLIENT).with_attr("to", "romeo@example.org"));
        let actions = drain(&mut s);
        assert!(
            matches!(&actions[..], [Action::Stanza(m)] if m.is("message", NS_CLIENT)),
            "{actions:?}"
        );
        // A second restart is out of place.
        s.bosh_start(Some("example.org"), Some("1.0"));
        let actions = drain(&mut s);
        assert!(messages(&actions).concat().contains("bad-format"));
        assert!(matches!(actions.last(), Some(Action::Close)));
    }

    #[test]
    fn xep0206_starttls_is_refused() {
        let mut s = bosh(true);
        s.bosh_start(Some("example.org"), Some("1.0"));
        drain(&mut s);
        s.bosh_element(Element::new("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
        let actions = drain(&mut s);
        assert!(!actions.iter().any(|a| matches!(a, Action::StartTls)));
        assert!(messages(&actions).concat().contains("policy-violation"));
    }
}
