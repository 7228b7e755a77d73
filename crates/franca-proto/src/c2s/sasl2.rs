//! The XEP-0388 SASL2 exchange inside [`C2sStream`], with what `<authenticate/>` may carry:
//! XEP-0484 FAST logins and token requests, XEP-0198 resumption and XEP-0386 Bind2 with its
//! inline features.
//!
//! Password mechanisms run through the same code as RFC 6120 SASL (`start_mechanism`,
//! `provide_credentials`, `sasl_response`); while a [`Flow`] is set, challenges, failures and
//! success take the SASL2 form. After authentication the steps the client asked for run in a
//! fixed order, each one a request to the transport answered before the next:
//! token issuing → resumption → (if resumption failed or was not asked for) binding → inline
//! features. Then `<success/>` is written with everything they produced. A resumed stream
//! writes it at once, so that the retransmitted stanzas the transport writes next follow it.

use super::{Action, C2sStream, State, account_of};
use crate::bind2::{self, BindRequest};
use crate::fast::{self, HtMechanism, StoredToken};
use crate::ns::{NS_CSI, NS_SM};
use crate::sasl::{self, Mechanism, SaslError};
use crate::sasl2::{self, Authenticate};
use franca_xml::Element;

/// One SASL2 exchange, from `<authenticate/>` to `<success/>`.
pub(super) struct Flow {
    req: Authenticate,
    fast: Option<FastLogin>,
    /// Set once authenticated.
    account: Option<String>,
    additional: Vec<u8>,
    /// Taken from `req` when binding starts; its inline features come after.
    bind: Option<BindRequest>,
    /// The full JID once bound or resumed.
    jid: Option<String>,
    /// The answers of the inline features, once Bind2 ran.
    bound: Option<Vec<Element>>,
    /// Other children of `<success/>`: the token, a failed resumption.
    extra: Vec<Element>,
}

/// A FAST login in progress.
struct FastLogin {
    mechanism: HtMechanism,
    proof: Vec<u8>,
    cb_data: Vec<u8>,
    /// The key of the token that matched, while storage records its use.
    key: Option<Vec<u8>>,
}

impl C2sStream {
    /// XEP-0484 mechanisms this stream can offer: only over TLS (XEP-0484 §6), and only those
    /// whose channel binding the connection has.
    fn fast_mechanisms(&self) -> Vec<HtMechanism> {
        if !self.config.fast || !self.tls {
            return Vec::new();
        }
        HtMechanism::offered(self.cb.as_deref())
    }

    /// The pre-authentication `<authentication xmlns='urn:xmpp:sasl:2'/>` feature.
    pub(super) fn sasl2_feature(&self, mechanisms: &[Mechanism]) -> Element {
        let vars = [NS_SM, NS_CSI]
            .into_iter()
            .chain(self.config.bind2_features.iter().map(String::as_str));
        let mut inline = vec![bind2::feature(vars), crate::sm::feature()];
        let fast = self.fast_mechanisms();
        if !fast.is_empty() {
            inline.push(fast::feature(&fast));
        }
        sasl2::feature(mechanisms.iter().map(|m| m.name()), inline)
    }

    /// A SASL2 element during negotiation.
    pub(super) fn sasl2_element(&mut self, el: Element) {
        match (el.name.as_str(), self.state) {
            ("authenticate", State::Negotiating) if self.sasl2.is_none() => {
                self.sasl2_authenticate(&el);
            }
            ("response", State::SaslChallenge) if self.sasl2.is_some() => self.sasl_response(&el),
            (name, _) => {
                self.sasl = None;
                self.awaiting_initial = None;
                self.sasl2 = None;
                self.state = State::Negotiating;
                let err = if name == "abort" {
                    SaslError::Aborted
                } else {
                    SaslError::MalformedRequest("unexpected SASL2 element")
                };
                self.write_element(&sasl2::failure(&err, None));
            }
        }
    }

    fn sasl2_refuse(&mut self, err: SaslError, text: Option<&str>) {
        self.sasl2 = None;
        self.write_element(&sasl2::failure(&err, text));
    }

    fn sasl2_authenticate(&mut self, el: &Element) {
        if !self.tls && !self.config.allow_plaintext {
            return self.sasl2_refuse(SaslError::EncryptionRequired, None);
        }
        let req = match Authenticate::parse(el, &self.config.bind2_features) {
            Ok(r) => r,
            Err(e) => return self.sasl2_refuse(e, None),
        };
        let fast_mechs = self.fast_mechanisms();
        if let Some(m) = &req.request_token {
            if !fast_mechs.iter().any(|f| f.name() == m) {
                return self
                    .sasl2_refuse(SaslError::InvalidMechanism, Some("no such FAST mechanism"));
            }
            if req.user_agent_id.is_none() {
                return self.sasl2_refuse(
                    SaslError::MalformedRequest("FAST needs a user-agent id"),
                    Some("a FAST token needs <user-agent id='…'/>"),
                );
            }
        }
        if let Some(ht) = HtMechanism::from_name(&req.mechanism) {
            if !fast_mechs.contains(&ht) {
                return self.sasl2_refuse(SaslError::InvalidMechanism, None);
            }
            return self.fast_login(ht, req);
        }
        let mech = Mechanism::from_name(&req.mechanism).filter(|m| self.mechanisms().contains(m));
        let Some(mech) = mech else {
            return self.sasl2_refuse(SaslError::InvalidMechanism, None);
        };
        let initial = req.initial_response.clone();
        self.sasl2 = Some(Box::new(Flow::new(req)));
        match initial {
            Some(text) => self.start_mechanism(mech, &text),
            None => {
                self.awaiting_initial = Some(mech);
                self.state = State::SaslChallenge;
                self.write_element(&sasl2::challenge(b""));
            }
        }
    }

    /// XEP-0484 §3.4: one message proves the token; the transport looks up the client's tokens.
    fn fast_login(&mut self, mechanism: HtMechanism, req: Authenticate) {
        let Some(client_id) = req.user_agent_id.clone() else {
            return self.sasl2_refuse(
                SaslError::MalformedRequest("FAST needs a user-agent id"),
                Some("FAST needs <user-agent id='…'/>"),
            );
        };
        let Some(text) = req.initial_response.as_deref() else {
            return self.sasl2_refuse(
                SaslError::MalformedRequest("HT needs an initial response"),
                None,
            );
        };
        let parsed = sasl::decode_payload(text)
            .and_then(|data| fast::parse_initial_response(&data))
            .and_then(|ir| {
                let domain = self.domain.clone().unwrap_or_default();
                account_of(&ir.authcid, &domain).map(|account| (account, ir.proof))
            });
        let (account, proof) = match parsed {
            Ok(p) => p,
            Err(e) => return self.sasl2_refuse(e, None),
        };
        let cb_data = mechanism.cb_data(self.cb.as_deref()).unwrap_or_default();
        let mut flow = Flow::new(req);
        flow.fast = Some(FastLogin {
            mechanism,
            proof,
            cb_data,
            key: None,
        });
        flow.account = Some(account.clone());
        self.sasl2 = Some(Box::new(flow));
        self.account = None;
        self.state = State::AwaitCredentials;
        self.pending
            .push_back(Action::FastTokens { account, client_id });
    }

    /// The answer to [`Action::FastTokens`]: the tokens storage has for that client, each
    /// marked expired or not by the transport's clock.
    pub fn provide_fast_tokens(&mut self, tokens: &[StoredToken]) {
        if self.state != State::AwaitCredentials {
            return;
        }
        let Some(flow) = self.sasl2.as_deref_mut() else {
            return;
        };
        let count = flow.req.fast.and_then(|f| f.count);
        let invalidate = flow.req.fast.is_some_and(|f| f.invalidate);
        let account = flow.account.clone().unwrap_or_default();
        let client_id = flow.req.user_agent_id.clone().unwrap_or_default();
        let Some(login) = flow.fast.as_mut() else {
            return;
        };
        match fast::check(tokens, login.mechanism, &login.cb_data, &login.proof, count) {
            Ok(i) => {
                let key = tokens[i].key.clone();
                login.key = Some(key.clone());
                self.pending.push_back(Action::FastTokenUsed {
                    account,
                    client_id,
                    key,
                    count,
                    invalidate,
                });
            }
            Err(e) => {
                self.state = State::Negotiating;
                self.pending.push_back(Action::AuthFailed {
                    account: Some(account),
                });
                self.sasl_failure(e, None);
            }
        }
    }

    /// The answer to [`Action::FastTokenUsed`]: whether storage recorded the use (it refuses
    /// a token that expired, was revoked or saw that replay counter in the meantime).
    pub fn fast_token_used(&mut self, ok: bool) {
        if self.state != State::AwaitCredentials {
            return;
        }
        let Some(flow) = self.sasl2.as_deref() else {
            return;
        };
        let account = flow.account.clone().unwrap_or_default();
        let proof = flow.fast.as_ref().and_then(|l| {
            l.key
                .as_deref()
                .map(|key| fast::responder_proof(key, &l.cb_data))
        });
        self.state = State::Negotiating;
        match proof.filter(|_| ok) {
            Some(proof) => self.succeed(account, proof),
            None => {
                self.pending.push_back(Action::AuthFailed {
                    account: Some(account),
                });
                self.sasl_failure(SaslError::NotAuthorized, None);
            }
        }
    }

    /// Writes a challenge in the form of the exchange in progress.
    pub(super) fn write_challenge(&mut self, data: &[u8]) {
        let el = if self.sasl2.is_some() {
            sasl2::challenge(data)
        } else {
            super::sasl_payload("challenge", data)
        };
        self.write_element(&el);
    }

    /// A SASL2 failure, when a SASL2 exchange is in progress (it ends it); false otherwise.
    pub(super) fn sasl2_failure(&mut self, err: &SaslError, text: Option<&str>) -> bool {
        if self.sasl2.take().is_none() {
            return false;
        }
        self.write_element(&sasl2::failure(err, text));
        true
    }

    /// The mechanism succeeded: no `<success/>` yet, the requested steps come first.
    pub(super) fn sasl2_authenticated(&mut self, account: String, additional: Vec<u8>) {
        self.sasl = None;
        self.account = Some(account.clone());
        if let Some(flow) = self.sasl2.as_deref_mut() {
            flow.account = Some(account.clone());
            flow.additional = additional;
        }
        self.pending.push_back(Action::Authenticated { account });
        self.sasl2_next();
    }

    /// Asks the transport for the next step the client requested, or finishes.
    fn sasl2_next(&mut self) {
        let Some(flow) = self.sasl2.as_deref_mut() else {
            return;
        };
        let account = flow.account.clone().unwrap_or_default();
        let client_id = flow.req.user_agent_id.clone().unwrap_or_default();
        if let Some(m) = flow.req.request_token.take()
            && let Some(mechanism) = HtMechanism::from_name(&m)
        {
            self.state = State::AwaitSasl2;
            self.pending.push_back(Action::IssueFastToken {
                account,
                client_id,
                mechanism: mechanism.name(),
            });
            return;
        }
        if let Some((previd, h)) = flow.req.resume.take() {
            self.state = State::AwaitResume;
            self.pending.push_back(Action::Resume { previd, h });
            return;
        }
        if let Some(bind) = flow.req.bind.take() {
            let resource = bind2::resource(
                bind.tag.as_deref(),
                &account,
                Some(&client_id)
                    .filter(|c| !c.is_empty())
                    .map(String::as_str),
            );
            flow.bind = Some(bind);
            self.state = State::AwaitBind;
            self.pending.push_back(Action::Bind {
                resource: Some(resource),
            });
            return;
        }
        self.sasl2_finish();
    }

    /// The answer to [`Action::IssueFastToken`]: the token and its XEP-0082 expiry, or `None`
    /// when none could be stored (the login goes on without one).
    pub fn fast_token_issued(&mut self, token: Option<(String, String)>) {
        if self.state != State::AwaitSasl2 {
            return;
        }
        if let (Some(flow), Some((token, expiry))) = (self.sasl2.as_deref_mut(), token) {
            flow.extra.push(fast::token_element(&token, &expiry));
        }
        self.sasl2_next();
    }

    /// The session being resumed through SASL2 has this full JID (for
    /// `<authorization-identifier/>`); call before [`C2sStream::resumed`]. Does nothing outside
    /// SASL2.
    pub fn resumed_session(&mut self, jid: &str) {
        if let Some(flow) = self.sasl2.as_deref_mut() {
            flow.jid = Some(jid.to_owned());
        }
    }

    /// [`C2sStream::resumed`] inside SASL2: `<resumed/>` goes into `<success/>`, written now;
    /// `<failed/>` too, and binding follows if the client asked for it.
    pub(super) fn sasl2_resumed(&mut self, answer: Result<Element, Element>) {
        let Some(flow) = self.sasl2.as_deref_mut() else {
            return;
        };
        match answer {
            Ok(resumed) => {
                flow.extra.insert(0, resumed);
                flow.bind = None;
                flow.req.bind = None;
                self.sasl2_finish();
            }
            Err(failed) => {
                flow.jid = None;
                flow.extra.push(failed);
                self.sasl2_next();
            }
        }
    }

    /// [`C2sStream::bound`] inside SASL2.
    pub(super) fn sasl2_bound(&mut self, result: Result<&str, &'static str>) {
        let Some(flow) = self.sasl2.as_deref_mut() else {
            return;
        };
        match result {
            Ok(full) => {
                flow.jid = Some(full.to_owned());
                let bind = flow.bind.take().unwrap_or_default();
                if bind.sm_enable.is_none() && !bind.inactive && bind.extensions.is_empty() {
                    flow.bound = Some(Vec::new());
                    return self.sasl2_finish();
                }
                self.state = State::AwaitSasl2;
                self.pending.push_back(Action::Bind2Inline {
                    sm_enable: bind.sm_enable,
                    inactive: bind.inactive,
                    extensions: bind.extensions,
                });
            }
            Err(condition) => {
                // XEP-0388 §2.6.2: a failure leaves the stream unauthenticated.
                self.account = None;
                self.state = State::Negotiating;
                self.sasl2_refuse(SaslError::NotAuthorized, Some(condition));
            }
        }
    }

    /// The answer to [`Action::Bind2Inline`]: the inline features' answers for `<bound/>`
    /// (`<enabled/>` or `<failed/>` of stream management).
    pub fn bind2_enabled(&mut self, answers: Vec<Element>) {
        if self.state != State::AwaitSasl2 {
            return;
        }
        if let Some(flow) = self.sasl2.as_deref_mut() {
            flow.bound = Some(answers);
        }
        self.sasl2_finish();
    }

    /// Writes `<success/>`. A bound (or resumed) stream is established; otherwise the new
    /// stream features follow at once, with no restart (XEP-0388 §2.6.1).
    fn sasl2_finish(&mut self) {
        let Some(flow) = self.sasl2.take() else {
            return;
        };
        let Flow {
            account,
            additional,
            jid,
            bound,
            extra,
            ..
        } = *flow;
        let mut children = Vec::with_capacity(extra.len() + 1);
        if let Some(answers) = bound {
            children.push(bind2::bound(answers));
        }
        children.extend(extra);
        let identity = jid.clone().or(account).unwrap_or_default();
        self.write_element(&sasl2::success(&additional, &identity, children));
        if jid.is_some() {
            self.state = State::Established;
        } else {
            self.state = State::Bind;
            let features = self.features();
            self.write_element(&features);
        }
    }
}

impl Flow {
    fn new(req: Authenticate) -> Flow {
        Flow {
            req,
            fast: None,
            account: None,
            additional: Vec::new(),
            bind: None,
            jid: None,
            bound: None,
            extra: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Transcripts named after the XEP-0388, XEP-0386 and XEP-0484 sections they check.
    #![allow(clippy::unwrap_used)]

    use super::super::tests::{config, keys, run, tls_binding};
    use super::*;
    use crate::fast::token_key;
    use crate::ns::{NS_BIND2, NS_CARBONS, NS_FAST, NS_SASL2};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>";

    fn written(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Write(w) => Some(w.as_str()),
                _ => None,
            })
            .collect()
    }

    fn started() -> C2sStream {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        run(&mut s, HEADER);
        s
    }

    fn plain_authenticate(children: &str) -> String {
        format!(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{}</initial-response>{children}</authenticate>",
            B64.encode("\0juliet\0secret")
        )
    }

    fn ht_authenticate(token: &str, ua: &str, extra: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
        m.update(b"Initiator");
        let mut data = b"juliet\0".to_vec();
        data.extend(m.finalize().into_bytes());
        format!(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'><initial-response>{}</initial-response><user-agent id='{ua}'/><fast xmlns='urn:xmpp:fast:0' count='3'/>{extra}</authenticate>",
            B64.encode(data)
        )
    }

    #[test]
    fn xep0388_2_1_offered_next_to_rfc6120_sasl_with_inline_features() {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        let out = written(&run(&mut s, HEADER));
        assert!(
            out.contains("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"),
            "{out}"
        );
        assert!(
            out.contains("<authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-512-PLUS"),
            "{out}"
        );
        assert!(out.contains("<feature var='urn:xmpp:carbons:2'/>"), "{out}");
        assert!(
            out.contains("<mechanism>HT-SHA-256-NONE</mechanism>"),
            "{out}"
        );
        // Without TLS (plaintext allowed for benchmarks) FAST is not offered.
        let mut s = C2sStream::new(config(true), None);
        let out = written(&run(&mut s, HEADER));
        assert!(out.contains("urn:xmpp:sasl:2"), "{out}");
        assert!(!out.contains("urn:xmpp:fast:0"), "{out}");
    }

    #[test]
    fn xep0386_bind2_with_inline_sm_carbons_and_a_fast_token() {
        let mut s = started();
        let actions = run(
            &mut s,
            &plain_authenticate(
                "<user-agent id='ua-1'/><bind xmlns='urn:xmpp:bind:0'><tag>App</tag>\
                 <enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>\
                 <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>",
            ),
        );
        assert!(
            matches!(actions.last(), Some(Action::Credentials { .. })),
            "{actions:?}"
        );
        s.provide_credentials("juliet@example.org", Some(keys("secret")));
        let actions = run(&mut s, "");
        assert!(
            written(&actions).is_empty(),
            "nothing before the steps ran: {actions:?}"
        );
        assert!(
            matches!(&actions[0], Action::Authenticated { account } if account == "juliet@example.org")
        );
        assert!(
            matches!(&actions[1], Action::IssueFastToken { client_id, mechanism: "HT-SHA-256-NONE", .. } if client_id == "ua-1")
        );
        s.fast_token_issued(Some(("tok".into(), "2030-01-01T00:00:00Z".into())));
        let actions = run(&mut s, "");
        let resource = match &actions[..] {
            [Action::Bind { resource: Some(r) }] => r.clone(),
            other => panic!("{other:?}"),
        };
        assert!(resource.starts_with("App/"), "{resource}");
        let full = format!("juliet@example.org/{resource}");
        s.bound(Ok(&full));
        let actions = run(&mut s, "");
        match &actions[..] {
            [
                Action::Bind2Inline {
                    sm_enable: Some((true, None)),
                    inactive: false,
                    extensions,
                },
            ] => {
                assert!(extensions[0].is("enable", NS_CARBONS));
            }
            other => panic!("{other:?}"),
        }
        s.bind2_enabled(vec![Element::new("enabled", NS_SM).with_attr("id", "x")]);
        let out = written(&run(&mut s, ""));
        assert!(
            out.starts_with("<success xmlns='urn:xmpp:sasl:2'>"),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "<authorization-identifier>{full}</authorization-identifier>"
            )),
            "{out}"
        );
        assert!(
            out.contains(
                "<bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3' id='x'/></bound>"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "<token xmlns='urn:xmpp:fast:0' expiry='2030-01-01T00:00:00Z' token='tok'/>"
            ),
            "{out}"
        );
        // No restart and no features: the stream is ready for stanzas.
        assert!(!out.contains("features"), "{out}");
        assert!(s.is_established());
        let actions = run(
            &mut s,
            "<message to='romeo@example.org'><body>hi</body></message>",
        );
        assert!(matches!(&actions[..], [Action::Stanza(_)]));
    }

    #[test]
    fn xep0388_2_6_1_without_bind2_the_new_features_follow_success() {
        let mut s = started();
        run(&mut s, &plain_authenticate(""));
        s.provide_credentials("juliet@example.org", Some(keys("secret")));
        let out = written(&run(&mut s, ""));
        assert!(
            out.contains("<authorization-identifier>juliet@example.org</authorization-identifier>"),
            "{out}"
        );
        assert!(
            out.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
            "{out}"
        );
        let actions = run(
            &mut s,
            "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        );
        assert!(matches!(
            actions.last(),
            Some(Action::Bind { resource: None })
        ));
    }

    #[test]
    fn xep0388_failures_are_sasl2_failures() {
        let mut s = started();
        run(&mut s, &plain_authenticate(""));
        s.provide_credentials("juliet@example.org", Some(keys("other")));
        let out = written(&run(&mut s, ""));
        assert!(out.contains("<failure xmlns='urn:xmpp:sasl:2'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>"), "{out}");
        // Unknown mechanism, malformed base64, an abort: the stream goes on.
        let out = written(&run(
            &mut s,
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='X-NOPE'/>",
        ));
        assert!(out.contains("<invalid-mechanism"), "{out}");
        let out = written(&run(
            &mut s,
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>!!</initial-response></authenticate>",
        ));
        assert!(out.contains("<incorrect-encoding"), "{out}");
        let out = written(&run(
            &mut s,
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'/>",
        ));
        assert_eq!(out, "<challenge xmlns='urn:xmpp:sasl:2'/>");
        let out = written(&run(&mut s, "<abort xmlns='urn:xmpp:sasl:2'/>"));
        assert!(out.contains("<aborted"), "{out}");
        assert!(!s.is_closed());
        // A token request for a mechanism that is not offered.
        let out = written(&run(
            &mut s,
            &plain_authenticate(
                "<user-agent id='u'/><request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-UNIQ'/>",
            ),
        ));
        assert!(out.contains("<invalid-mechanism"), "{out}");
        // A token request without a user agent.
        let out = written(&run(
            &mut s,
            &plain_authenticate(
                "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>",
            ),
        ));
        assert!(out.contains("<malformed-request"), "{out}");
    }

    fn fast_started(token: &str) -> (C2sStream, Vec<StoredToken>) {
        let mut s = started();
        let actions = run(&mut s, &ht_authenticate(token, "ua-1", ""));
        assert!(
            matches!(&actions[..], [Action::FastTokens { account, client_id }]
                if account == "juliet@example.org" && client_id == "ua-1"),
            "{actions:?}"
        );
        let stored = vec![StoredToken {
            key: token_key(token),
            mechanism: "HT-SHA-256-NONE".into(),
            expired: false,
            count: 2,
        }];
        (s, stored)
    }

    #[test]
    fn xep0484_3_4_login_with_a_token_in_one_round_trip() {
        let token = fast::new_token();
        let (mut s, stored) = fast_started(&token);
        s.provide_fast_tokens(&stored);
        let actions = run(&mut s, "");
        assert!(
            matches!(&actions[..], [Action::FastTokenUsed { count: Some(3), invalidate: false, key, .. }] if *key == stored[0].key),
            "{actions:?}"
        );
        s.fast_token_used(true);
        let actions = run(&mut s, "");
        let out = written(&actions);
        let proof = fast::responder_proof(&token_key(&token), b"");
        assert!(
            out.contains(&format!(
                "<additional-data>{}</additional-data>",
                B64.encode(proof)
            )),
            "{out}"
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Authenticated { .. }))
        );
        assert_eq!(s.account(), Some("juliet@example.org"));
    }

    #[test]
    fn xep0484_hostile_token_logins_fail() {
        // A token that is not the client's (another user's, revoked, or made up).
        let (mut s, stored) = fast_started(&fast::new_token());
        let mut other = stored.clone();
        other[0].key =
            token_key("someone else's token, long enough to be hashed by HMAC itself....");
        s.provide_fast_tokens(&other);
        let actions = run(&mut s, "");
        assert!(
            written(&actions).contains("<failure xmlns='urn:xmpp:sasl:2'><not-authorized"),
            "{actions:?}"
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::AuthFailed { .. }))
        );
        assert_eq!(s.account(), None);
        // Expired.
        let token = fast::new_token();
        let (mut s, mut stored) = fast_started(&token);
        stored[0].expired = true;
        s.provide_fast_tokens(&stored);
        assert!(written(&run(&mut s, "")).contains("<credentials-expired"));
        // A replayed counter (3 is not above 3).
        let (mut s, mut stored) = fast_started(&token);
        stored[0].count = 3;
        s.provide_fast_tokens(&stored);
        assert!(written(&run(&mut s, "")).contains("<not-authorized"));
        // Storage refused the use (revoked or replayed meanwhile).
        let (mut s, stored) = fast_started(&token);
        s.provide_fast_tokens(&stored);
        run(&mut s, "");
        s.fast_token_used(false);
        assert!(written(&run(&mut s, "")).contains("<not-authorized"));
        // No user agent; a bad initial response.
        let mut s = started();
        let no_ua = ht_authenticate(&token, "x", "").replace("<user-agent id='x'/>", "");
        assert!(written(&run(&mut s, &no_ua)).contains("<malformed-request"));
        let bad = "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'><initial-response>anVsaWV0</initial-response><user-agent id='x'/></authenticate>";
        assert!(written(&run(&mut s, bad)).contains("<malformed-request"));
        // An oversize user-agent id.
        let long = ht_authenticate(&token, &"u".repeat(500), "");
        assert!(written(&run(&mut s, &long)).contains("<malformed-request"));
        assert!(!s.is_closed());
    }

    #[test]
    fn xep0198_inline_resumption_in_authenticate() {
        let mut s = started();
        run(
            &mut s,
            &plain_authenticate(
                "<resume xmlns='urn:xmpp:sm:3' previd='abc' h='2'/><bind xmlns='urn:xmpp:bind:0'/>",
            ),
        );
        s.provide_credentials("juliet@example.org", Some(keys("secret")));
        let actions = run(&mut s, "");
        assert!(matches!(actions.last(), Some(Action::Resume { previd, h: 2 }) if previd == "abc"));
        s.resumed_session("juliet@example.org/phone");
        s.resumed(Ok(crate::sm::Nonza::Resumed {
            previd: "abc".into(),
            h: 5,
        }
        .to_element()));
        s.send_stanza_xml("<message><body>again</body></message>");
        let out = written(&run(&mut s, ""));
        assert!(
            out.starts_with("<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>juliet@example.org/phone</authorization-identifier><resumed xmlns='urn:xmpp:sm:3' previd='abc' h='5'/></success><message"),
            "{out}"
        );
        assert!(s.is_established());

        // A failed resumption is reported in <success/> and Bind2 goes on.
        let mut s = started();
        run(
            &mut s,
            &plain_authenticate(
                "<resume xmlns='urn:xmpp:sm:3' previd='gone' h='2'/><bind xmlns='urn:xmpp:bind:0'/>",
            ),
        );
        s.provide_credentials("juliet@example.org", Some(keys("secret")));
        run(&mut s, "");
        s.resumed(Err(crate::sm::SmError::UnknownSession.to_element()));
        let actions = run(&mut s, "");
        assert!(matches!(
            actions.last(),
            Some(Action::Bind { resource: Some(_) })
        ));
        s.bound(Ok("juliet@example.org/r"));
        let out = written(&run(&mut s, ""));
        assert!(
            out.contains("<bound xmlns='urn:xmpp:bind:0'/><failed xmlns='urn:xmpp:sm:3'"),
            "{out}"
        );
        assert!(s.is_established());
    }

    #[test]
    fn xep0388_a_failed_bind2_leaves_the_stream_unauthenticated() {
        let mut s = started();
        run(
            &mut s,
            &plain_authenticate("<bind xmlns='urn:xmpp:bind:0'/>"),
        );
        s.provide_credentials("juliet@example.org", Some(keys("secret")));
        run(&mut s, "");
        s.bound(Err("not-authorized"));
        let out = written(&run(&mut s, ""));
        assert!(out.contains("<failure xmlns='urn:xmpp:sasl:2'>"), "{out}");
        assert_eq!(s.account(), None);
        let _ = (NS_BIND2, NS_FAST, NS_SASL2);
    }
}
