//! XEP-0357 Push Notifications: a client enables an app server's push service (`jid`) and
//! node for its account; when a message worth waking the device for arrives while the account
//! cannot take it live — no session, so it goes to offline storage, or a session hibernated by
//! XEP-0198 waiting for resumption — the server publishes a notification to every registration,
//! from the account's bare JID (§7).
//!
//! The notification carries a `urn:xmpp:push:summary` form: `message-count` (messages since
//! the user was last online: initial presence, or a resumption before this hibernation) and
//! `last-message-sender` when `[push]` allows them, and `last-message-body` only when the
//! configuration allows it *and* the client opted in with the publish option `include-body`
//! (`true` or `1`): bodies pass through third parties (§9). The publish-options form given at
//! enable time is stored and sent back with each publish (§5), `include-body` included.
//!
//! An app server on another domain is reached like any remote JID: the publish goes through
//! `Server::route`, which hands it to federation (RFC 6120 server-to-server), and its answer
//! comes back over the same road. An error answer to a publish disables that registration
//! (§7.1), except `wait` errors and `remote-server-not-found`/`remote-server-timeout` (the
//! router's or federation's bounces when the remote domain cannot be reached, or no federation
//! is configured), which say nothing about the app server: the registration is kept for the
//! next notification. Registrations are capped per account
//! (`push.max_per_account`), notifications per registration and minute
//! (`push.max_per_minute`). An app server on this server is a client's full JID (a bare JID
//! has no pubsub service to answer, so its `service-unavailable` disables the registration).
//! Registrations are read from storage for each message that waits, which is already the slow
//! road (offline storage writes, hibernated sessions are few).

use crate::offline::parse_stored;
use franca_core::{Flow, IqRequest, IqResult, IqTarget, Module, Server, Session, SessionEvent};
use franca_proto::errors::{ErrorType, StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{
    NS_CLIENT, NS_DATA_FORMS, NS_EME, NS_HINTS, NS_JINGLE_MESSAGE, NS_JINGLE_MESSAGE_1,
};
use franca_store::PushRegistration;
use franca_xml::Element;
use jid::{BareJid, Jid};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const NS_PUSH: &str = "urn:xmpp:push:0";
const NS_PUSH_SUMMARY: &str = "urn:xmpp:push:summary";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// The publish option by which a client asks for message bodies in its notifications.
pub const INCLUDE_BODY: &str = "include-body";

/// Encrypted payloads that are worth a notification without a readable body: OMEMO (legacy
/// and 0384 v2), OpenPGP for XMPP (XEP-0373) and legacy OpenPGP (XEP-0027).
const ENCRYPTED: &[&str] = &[
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
    "urn:xmpp:openpgp:0",
    "jabber:x:encrypted",
];

/// Longest node name accepted.
const MAX_NODE: usize = 1024;
/// Publish-options limits: fields, values per field, bytes per var or value, bytes in all.
const MAX_FIELDS: usize = 32;
const MAX_VALUES: usize = 8;
const MAX_VALUE_BYTES: usize = 2048;
const MAX_FORM_BYTES: usize = 8 * 1024;
/// Longest body put into a summary, bytes (cut at a character boundary).
const MAX_BODY_BYTES: usize = 1024;

/// Accounts with a running message count; past it the counts start again (the next
/// notifications say fewer messages, nothing else).
const MAX_AWAY: usize = 100_000;
/// Messages remembered per account as already notified while hibernated.
const MAX_NOTIFIED: usize = 1024;
/// Publishes waiting for an answer, and how long one waits.
const MAX_PENDING: usize = 10_000;
const PENDING_TTL: Duration = Duration::from_secs(120);
const ID_PREFIX: &str = "push-";

/// A registration as used to publish: the stored one, read.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    jid: Jid,
    node: String,
    options: Option<Element>,
    include_body: bool,
}

/// What an account accumulated since its user was last online.
#[derive(Default)]
struct Away {
    count: u32,
    /// The hibernation (session id, number) the count belongs to: a later one means the
    /// session was resumed in between, so the user saw everything.
    hibernation: Option<(u64, u32)>,
    /// Hashes of messages notified while queued for a hibernated session; when the session
    /// ends without resumption they come back through offline storage and must not count
    /// twice.
    notified: HashSet<u64>,
    /// Per registration (JID, node): the start of the current minute and publishes in it.
    rate: HashMap<(String, String), (Instant, u32)>,
}

/// A publish waiting for the app server's answer.
struct Pending {
    user: BareJid,
    jid: Jid,
    node: String,
    sent: Instant,
}

#[derive(Default)]
struct State {
    away: HashMap<BareJid, Away>,
    pending: HashMap<String, Pending>,
}

pub struct Push {
    state: Mutex<State>,
    /// Keys message hashes and publish ids (random per process, so ids are unguessable).
    hasher: RandomState,
    next_id: AtomicU64,
}

impl Default for Push {
    fn default() -> Self {
        Push::new()
    }
}

impl Push {
    pub fn new() -> Push {
        Push {
            state: Mutex::default(),
            hasher: RandomState::new(),
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{ID_PREFIX}{:016x}{n:x}", self.hasher.hash_one(n))
    }

    /// A message for `user` will wait: count it, and publish to every registration whose
    /// minute allows it. `hibernation` is set when it waits in a hibernated session's queue.
    async fn notify(
        &self,
        server: &Arc<Server>,
        user: &BareJid,
        message: &Element,
        hibernation: Option<(u64, u32)>,
    ) {
        let Some(reason) = worth_notifying(message) else {
            return;
        };
        let registrations = match server.store.push_registrations(user.as_str()).await {
            Ok(r) if r.is_empty() => return,
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%user, "storage error reading push registrations: {e}");
                return;
            }
        };
        let config = &server.config.push;
        let digest = self
            .hasher
            .hash_one(franca_core::session::serialise(message));
        let mut due = Vec::new();
        let count;
        {
            let mut state = self.lock();
            if state.away.len() >= MAX_AWAY && !state.away.contains_key(user) {
                state.away.clear();
            }
            let away = state.away.entry(user.clone()).or_default();
            match hibernation {
                Some(h) => {
                    if away.hibernation.is_some_and(|old| old != h) {
                        // Resumed since the last count: the user saw those.
                        away.count = 0;
                        away.notified.clear();
                    }
                    away.hibernation = Some(h);
                    if away.notified.len() >= MAX_NOTIFIED {
                        away.notified.clear();
                    }
                    away.notified.insert(digest);
                }
                None => {
                    if away.notified.remove(&digest) {
                        return;
                    }
                }
            }
            away.count = away.count.saturating_add(1);
            count = away.count;
            let now = Instant::now();
            for reg in registrations {
                let key = (reg.jid.clone(), reg.node.clone());
                let (start, sent) = away.rate.entry(key).or_insert((now, 0));
                if now.duration_since(*start) >= Duration::from_secs(60) {
                    (*start, *sent) = (now, 0);
                }
                if config.max_per_minute > 0 && *sent >= config.max_per_minute {
                    continue;
                }
                *sent += 1;
                due.push(reg);
            }
        }
        for reg in due {
            let Some(target) = read_registration(&reg) else {
                tracing::error!(%user, jid = reg.jid, "unreadable push registration skipped");
                continue;
            };
            let include_body = config.include_body && target.include_body;
            let summary = summary(config, count, message, reason, include_body);
            let id = self.publish_id();
            let iq = publish(user, &target, &id, summary);
            self.track(
                id,
                Pending {
                    user: user.clone(),
                    jid: target.jid,
                    node: target.node,
                    sent: Instant::now(),
                },
            );
            server.route(iq).await;
        }
    }

    /// Remember a publish so its error answer can disable the registration.
    fn track(&self, id: String, pending: Pending) {
        let mut state = self.lock();
        if state.pending.len() >= MAX_PENDING {
            state.pending.retain(|_, p| p.sent.elapsed() < PENDING_TTL);
            if state.pending.len() >= MAX_PENDING {
                // Untracked: an error answer to it is ignored, the registration stays.
                return;
            }
        }
        state.pending.insert(id, pending);
    }

    /// An answer to one of our publishes: an error disables the registration (§7.1).
    async fn answer(&self, server: &Arc<Server>, iq: &Element) -> Flow {
        let Some(id) = iq.attr("id").filter(|id| id.starts_with(ID_PREFIX)) else {
            return Flow::Continue;
        };
        let from = iq.attr("from").and_then(|f| Jid::new(f).ok());
        let pending = {
            let mut state = self.lock();
            match state.pending.entry(id.to_owned()) {
                // Only the app server it went to may answer it.
                Entry::Occupied(e) if from.as_ref() == Some(&e.get().jid) => e.remove(),
                _ => return Flow::Continue,
            }
        };
        if iq.attr("type") != Some("error") {
            return Flow::Handled;
        }
        let error = StanzaError::from_element(iq);
        let transient = error.as_ref().is_some_and(|e| {
            e.type_ == ErrorType::Wait
                || matches!(
                    e.condition,
                    Cond::RemoteServerNotFound | Cond::RemoteServerTimeout
                )
        });
        let condition = error.map_or("none", |e| e.condition.name());
        if transient {
            tracing::debug!(user = %pending.user, jid = %pending.jid, condition, "push not delivered; registration kept");
            return Flow::Handled;
        }
        tracing::info!(user = %pending.user, jid = %pending.jid, node = pending.node, condition, "app server refused a push; registration disabled");
        if let Err(e) = server
            .store
            .remove_push_registrations(
                pending.user.as_str(),
                pending.jid.as_str(),
                Some(&pending.node),
            )
            .await
        {
            tracing::error!(user = %pending.user, "storage error disabling push: {e}");
        }
        Flow::Handled
    }
}

/// Why a message is worth waking a device for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Body,
    Encrypted,
    /// XEP-0353 call propose.
    Call,
}

fn worth_notifying(message: &Element) -> Option<Reason> {
    if message.name != "message" || matches!(message.attr("type"), Some("error" | "headline")) {
        return None;
    }
    if message
        .elements()
        .any(|c| ENCRYPTED.contains(&c.ns.as_str()) || c.ns == NS_EME)
    {
        return Some(Reason::Encrypted);
    }
    if message
        .child("body", NS_CLIENT)
        .is_some_and(|b| !b.text().trim().is_empty())
    {
        return Some(Reason::Body);
    }
    if message
        .elements()
        .any(|c| c.name == "propose" && (c.ns == NS_JINGLE_MESSAGE || c.ns == NS_JINGLE_MESSAGE_1))
    {
        return Some(Reason::Call);
    }
    None
}

/// Whether the offline module (XEP-0160 with XEP-0334 hints) keeps this message rather than
/// bouncing it: only a kept message is worth a notification.
fn stored_offline(message: &Element) -> bool {
    let hint = |name| message.has_child(name, NS_HINTS);
    if hint("no-store") || hint("no-permanent-store") {
        return false;
    }
    match message.attr("type") {
        Some("error") => false,
        Some("groupchat" | "headline") => hint("store"),
        _ => true,
    }
}

/// The `urn:xmpp:push:summary` form.
fn summary(
    config: &franca_core::config::PushConfig,
    count: u32,
    message: &Element,
    reason: Reason,
    include_body: bool,
) -> Element {
    let mut form = Element::new("x", NS_DATA_FORMS).with_attr("type", "submit");
    form.push(field("FORM_TYPE", [NS_PUSH_SUMMARY]));
    if config.include_message_count {
        form.push(field("message-count", [count.to_string()]));
    }
    if config.include_sender
        && let Some(from) = message.attr("from")
    {
        form.push(field("last-message-sender", [from]));
    }
    // An encrypted message's body is only a fallback text for clients that cannot decrypt.
    if include_body && reason == Reason::Body {
        let body = message
            .child("body", NS_CLIENT)
            .map(Element::text)
            .unwrap_or_default();
        form.push(field(
            "last-message-body",
            [truncate(&body, MAX_BODY_BYTES)],
        ));
    }
    form
}

fn field<V: Into<String>>(var: &str, values: impl IntoIterator<Item = V>) -> Element {
    let mut f = Element::new("field", NS_DATA_FORMS).with_attr("var", var);
    for v in values {
        f.push(Element::new("value", NS_DATA_FORMS).with_text(v));
    }
    f
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The §7 publish to one registration.
fn publish(user: &BareJid, target: &Target, id: &str, summary: Element) -> Element {
    let notification = Element::new("notification", NS_PUSH).with_child(summary);
    let publish = Element::new("publish", NS_PUBSUB)
        .with_attr("node", target.node.as_str())
        .with_child(Element::new("item", NS_PUBSUB).with_child(notification));
    let mut pubsub = Element::new("pubsub", NS_PUBSUB).with_child(publish);
    if let Some(options) = &target.options {
        pubsub.push(Element::new("publish-options", NS_PUBSUB).with_child(options.clone()));
    }
    Element::new("iq", NS_CLIENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("from", user.as_str())
        .with_attr("to", target.jid.as_str())
        .with_child(pubsub)
}

fn read_registration(reg: &PushRegistration) -> Option<Target> {
    let options = match &reg.options {
        Some(xml) => Some(parse_stored(xml)?),
        None => None,
    };
    let include_body = options.as_ref().is_some_and(opted_in_to_body);
    Some(Target {
        jid: Jid::new(&reg.jid).ok()?,
        node: reg.node.clone(),
        options,
        include_body,
    })
}

fn opted_in_to_body(form: &Element) -> bool {
    form.elements()
        .filter(|f| f.is("field", NS_DATA_FORMS) && f.attr("var") == Some(INCLUDE_BODY))
        .flat_map(|f| f.elements())
        .any(|v| v.is("value", NS_DATA_FORMS) && matches!(v.text().trim(), "true" | "1"))
}

fn bad(text: &str) -> StanzaError {
    StanzaError::new(Cond::BadRequest).with_text(text)
}

/// §5: the publish-options form of an `<enable/>`, rebuilt from its fields (vars and values
/// only) within the limits, so what is stored and echoed is bounded and well-formed.
fn publish_options(enable: &Element) -> Result<Option<Element>, StanzaError> {
    let mut forms = enable.elements().filter(|c| c.is("x", NS_DATA_FORMS));
    let Some(form) = forms.next() else {
        return Ok(None);
    };
    if forms.next().is_some() {
        return Err(bad("more than one data form"));
    }
    let too_big = || StanzaError::new(Cond::NotAcceptable).with_text("publish options too large");
    let mut out = Element::new("x", NS_DATA_FORMS).with_attr("type", "submit");
    let mut form_type = None;
    let mut fields = 0;
    for f in form.elements().filter(|c| c.is("field", NS_DATA_FORMS)) {
        fields += 1;
        if fields > MAX_FIELDS + 1 {
            return Err(too_big());
        }
        let Some(var) = f.attr("var").filter(|v| !v.is_empty()) else {
            return Err(bad("a field without var"));
        };
        if var.len() > MAX_VALUE_BYTES {
            return Err(too_big());
        }
        let values: Vec<String> = f
            .elements()
            .filter(|v| v.is("value", NS_DATA_FORMS))
            .map(Element::text)
            .collect();
        if values.len() > MAX_VALUES || values.iter().any(|v| v.len() > MAX_VALUE_BYTES) {
            return Err(too_big());
        }
        if var == "FORM_TYPE" {
            form_type = values.into_iter().next();
            continue;
        }
        out.push(field(var, values));
    }
    if form_type.as_deref() != Some(NS_PUBLISH_OPTIONS) {
        return Err(bad("the form's FORM_TYPE must be publish-options"));
    }
    let mut rebuilt = Element::new("x", NS_DATA_FORMS).with_attr("type", "submit");
    rebuilt.push(field("FORM_TYPE", [NS_PUBLISH_OPTIONS]));
    for f in out.elements() {
        rebuilt.push(f.clone());
    }
    if rebuilt.to_xml().len() > MAX_FORM_BYTES {
        return Err(too_big());
    }
    Ok(Some(rebuilt))
}

/// The service JID of an `<enable/>` or `<disable/>`, normalised.
fn service_jid(el: &Element) -> Result<Jid, StanzaError> {
    let raw = el
        .attr("jid")
        .filter(|j| !j.is_empty())
        .ok_or_else(|| bad("missing jid"))?;
    Jid::new(raw).map_err(|_| StanzaError::new(Cond::JidMalformed))
}

fn node(el: &Element) -> Result<Option<&str>, StanzaError> {
    match el.attr("node") {
        None | Some("") => Ok(None),
        Some(n) if n.len() > MAX_NODE => {
            Err(StanzaError::new(Cond::NotAcceptable).with_text("node too long"))
        }
        Some(n) => Ok(Some(n)),
    }
}

/// An `<enable/>` parsed: what to store.
fn parse_enable(el: &Element) -> Result<PushRegistration, StanzaError> {
    let jid = service_jid(el)?;
    let node = node(el)?.ok_or_else(|| bad("missing node"))?;
    let options = publish_options(el)?;
    Ok(PushRegistration {
        jid: jid.to_string(),
        node: node.to_owned(),
        options: options.map(|o| o.to_xml()),
    })
}

#[async_trait::async_trait]
impl Module for Push {
    fn name(&self) -> &'static str {
        "push"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Account, NS_PUSH)]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[NS_PUSH]
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let Some(payload) = req.payload() else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        if !req.is_set() {
            return Err(bad("push is enabled and disabled with set"));
        }
        let user = req.to.to_bare();
        let store = &server.store;
        match payload.name.as_str() {
            "enable" => {
                let reg = parse_enable(payload)?;
                let max = server.config.push.max_per_account;
                match store.put_push_registration(user.as_str(), &reg, max).await {
                    Ok(true) => Ok(None),
                    Ok(false) => Err(StanzaError::new(Cond::ResourceConstraint)
                        .with_type(ErrorType::Wait)
                        .with_text(format!("at most {max} push registrations"))),
                    Err(e) => {
                        tracing::error!(%user, "storage error enabling push: {e}");
                        Err(StanzaError::new(Cond::InternalServerError))
                    }
                }
            }
            "disable" => {
                let jid = service_jid(payload)?;
                let node = node(payload)?;
                match store
                    .remove_push_registrations(user.as_str(), jid.as_str(), node)
                    .await
                {
                    Ok(_) => Ok(None),
                    Err(e) => {
                        tracing::error!(%user, "storage error disabling push: {e}");
                        Err(StanzaError::new(Cond::InternalServerError))
                    }
                }
            }
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }

    async fn inbound(&self, server: &Arc<Server>, _to: &BareJid, stanza: &mut Element) -> Flow {
        // Cheap checks first: this runs for every stanza to a local account.
        if stanza.name != "iq" || !matches!(stanza.attr("type"), Some("result" | "error")) {
            return Flow::Continue;
        }
        self.answer(server, stanza).await
    }

    async fn undeliverable(&self, server: &Arc<Server>, to: &BareJid, stanza: &Element) -> Flow {
        if server.config.modules.offline && stored_offline(stanza) {
            self.notify(server, to, stanza, None).await;
        }
        Flow::Continue
    }

    async fn queued_while_hibernated(
        &self,
        server: &Arc<Server>,
        session: &Arc<Session>,
        stanza: &Element,
    ) {
        let Some(n) = session.hibernation() else {
            return;
        };
        self.notify(server, &session.bare(), stanza, Some((session.id, n)))
            .await;
    }

    async fn session_event(&self, _server: &Arc<Server>, event: &SessionEvent) {
        if let SessionEvent::Available(session) = event {
            // Online again: the next notification counts from zero.
            self.lock().away.remove(&session.bare());
        }
    }

    async fn user_removed(&self, _server: &Arc<Server>, user: &BareJid) {
        // The registrations go with the account's storage.
        let mut state = self.lock();
        state.away.remove(user);
        state.pending.retain(|_, p| p.user != *user);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::{Client, server_with, xml};
    use franca_core::Config;

    async fn push_server(config: Config) -> Arc<Server> {
        server_with(
            config,
            vec![
                Arc::new(Push::new()),
                Arc::new(crate::offline::Offline),
                Arc::new(crate::disco::Disco),
            ],
        )
        .await
    }

    fn enable(jid: &str, node: &str, form: &str) -> String {
        format!(
            "<iq type='set' id='e1'><enable xmlns='{NS_PUSH}' jid='{jid}' node='{node}'>{form}</enable></iq>"
        )
    }

    fn options(fields: &str) -> String {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{NS_PUBLISH_OPTIONS}</value></field>{fields}</x>"
        )
    }

    #[test]
    fn xep0357_5_enable_parses_jid_node_and_rebuilds_publish_options() {
        let el = xml(&enable(
            "Push.Example",
            "n1",
            &options("<field var='secret' type='text-single' label='x'><value>s3</value></field>"),
        ));
        let reg = parse_enable(el.first_element().unwrap()).unwrap();
        assert_eq!(reg.jid, "push.example");
        assert_eq!(reg.node, "n1");
        let form = parse_stored(reg.options.as_deref().unwrap()).unwrap();
        assert_eq!(
            form.to_xml(),
            xml(&options("<field var='secret'><value>s3</value></field>")).to_xml()
        );
        assert!(!opted_in_to_body(&form));
    }

    #[test]
    fn hostile_enables_are_refused_with_the_right_error() {
        let cond = |s: &str| {
            parse_enable(xml(s).first_element().unwrap())
                .unwrap_err()
                .condition
        };
        assert_eq!(
            cond(&format!("<iq><enable xmlns='{NS_PUSH}' node='n'/></iq>")),
            Cond::BadRequest
        );
        assert_eq!(
            cond(&format!(
                "<iq><enable xmlns='{NS_PUSH}' jid='p.example'/></iq>"
            )),
            Cond::BadRequest
        );
        assert_eq!(
            cond(&format!(
                "<iq><enable xmlns='{NS_PUSH}' jid='@example.org' node='n'/></iq>"
            )),
            Cond::JidMalformed
        );
        let long_node = "n".repeat(MAX_NODE + 1);
        assert_eq!(
            cond(&enable("p.example", &long_node, "")),
            Cond::NotAcceptable
        );
        // A form of another type, and a form that is too large in each way.
        assert_eq!(
            cond(&enable(
                "p.example",
                "n",
                "<x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:other</value></field></x>"
            )),
            Cond::BadRequest
        );
        let many: String = (0..MAX_FIELDS + 1)
            .map(|i| format!("<field var='f{i}'><value>v</value></field>"))
            .collect();
        assert_eq!(
            cond(&enable("p.example", "n", &options(&many))),
            Cond::NotAcceptable
        );
        let huge = format!(
            "<field var='f'><value>{}</value></field>",
            "v".repeat(MAX_VALUE_BYTES + 1)
        );
        assert_eq!(
            cond(&enable("p.example", "n", &options(&huge))),
            Cond::NotAcceptable
        );
        let values: String = (0..MAX_VALUES + 1).map(|_| "<value>v</value>").collect();
        let fat = format!("<field var='f'>{values}</field>");
        assert_eq!(
            cond(&enable("p.example", "n", &options(&fat))),
            Cond::NotAcceptable
        );
        let total: String = (0..MAX_FIELDS)
            .map(|i| {
                format!(
                    "<field var='f{i}'><value>{}</value></field>",
                    "v".repeat(400)
                )
            })
            .collect();
        assert_eq!(
            cond(&enable("p.example", "n", &options(&total))),
            Cond::NotAcceptable
        );
    }

    #[test]
    fn what_is_worth_a_notification() {
        let reason = |s: &str| worth_notifying(&xml(s));
        assert_eq!(
            reason("<message><body>hi</body></message>"),
            Some(Reason::Body)
        );
        assert_eq!(
            reason(
                "<message><encrypted xmlns='eu.siacs.conversations.axolotl'/><body>fallback</body></message>"
            ),
            Some(Reason::Encrypted)
        );
        assert_eq!(
            reason("<message><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>"),
            Some(Reason::Call)
        );
        assert_eq!(
            reason("<message><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
            None
        );
        assert_eq!(reason("<message><body> </body></message>"), None);
        assert_eq!(
            reason("<message type='error'><body>x</body></message>"),
            None
        );
        assert_eq!(
            reason("<message type='headline'><body>x</body></message>"),
            None
        );
    }

    #[test]
    fn xep0357_7_summary_fields_and_no_body_unless_both_allow() {
        let mut config = Config::default().push;
        let m = xml("<message from='romeo@localhost/orchard'><body>Wherefore</body></message>");
        let form = summary(&config, 3, &m, Reason::Body, false).to_xml();
        assert!(
            form.contains("<value>urn:xmpp:push:summary</value>"),
            "{form}"
        );
        assert!(
            form.contains("var='message-count'><value>3</value>"),
            "{form}"
        );
        assert!(
            form.contains("var='last-message-sender'><value>romeo@localhost/orchard</value>"),
            "{form}"
        );
        assert!(!form.contains("Wherefore"), "{form}");
        let form = summary(&config, 3, &m, Reason::Body, true).to_xml();
        assert!(
            form.contains("var='last-message-body'><value>Wherefore</value>"),
            "{form}"
        );
        // An encrypted message's fallback body is never sent.
        assert!(
            !summary(&config, 1, &m, Reason::Encrypted, true)
                .to_xml()
                .contains("Wherefore")
        );
        config.include_sender = false;
        config.include_message_count = false;
        let form = summary(&config, 3, &m, Reason::Body, false).to_xml();
        assert!(
            !form.contains("message-count") && !form.contains("romeo"),
            "{form}"
        );
        assert_eq!(truncate("aé", 2), "a");
    }

    #[tokio::test]
    async fn xep0357_enable_disable_the_cap_and_disco() {
        let mut config = Config::default();
        config.push.max_per_account = 2;
        let server = push_server(config).await;
        let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
        juliet.send(&enable("push.example", "n1", "")).await;
        juliet.expect(
            "<iq type='result' id='e1' from='juliet@localhost' to='juliet@localhost/balcony'/>",
        );
        juliet.send(&enable("push.example", "n2", "")).await;
        juliet.recv().unwrap();
        // The same pair again only replaces its options; a third pair is one too many.
        juliet
            .send(&enable("push.example", "n2", &options("")))
            .await;
        assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
        juliet.send(&enable("other.example", "n", "")).await;
        let refused = juliet.recv().unwrap().to_xml();
        assert!(
            refused.contains("resource-constraint") && refused.contains("type='wait'"),
            "{refused}"
        );
        let stored = server
            .store
            .push_registrations("juliet@localhost")
            .await
            .unwrap();
        assert_eq!(stored.len(), 2);
        assert!(stored[1].options.is_some());

        // Only the account itself may enable.
        let mut romeo = Client::bind(&server, "romeo@localhost/orchard").await;
        romeo
            .send(&format!("<iq type='set' id='x' to='juliet@localhost'><enable xmlns='{NS_PUSH}' jid='evil.example' node='n'/></iq>"))
            .await;
        assert!(romeo.recv().unwrap().to_xml().contains("forbidden"));

        juliet
            .send(&format!("<iq type='set' id='d1'><disable xmlns='{NS_PUSH}' jid='push.example' node='n1'/></iq>"))
            .await;
        juliet.recv().unwrap();
        assert_eq!(
            server
                .store
                .push_registrations("juliet@localhost")
                .await
                .unwrap()
                .len(),
            1
        );
        juliet
            .send(&format!(
                "<iq type='set' id='d2'><disable xmlns='{NS_PUSH}' jid='push.example'/></iq>"
            ))
            .await;
        juliet.recv().unwrap();
        assert!(
            server
                .store
                .push_registrations("juliet@localhost")
                .await
                .unwrap()
                .is_empty()
        );
        juliet
            .send(&format!(
                "<iq type='set' id='d3'><disable xmlns='{NS_PUSH}'/></iq>"
            ))
            .await;
        assert!(juliet.recv().unwrap().to_xml().contains("bad-request"));

        juliet
            .send("<iq type='get' id='i1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
            .await;
        let info = juliet.recv().unwrap().to_xml();
        assert!(info.contains(&format!("var='{NS_PUSH}'")), "{info}");
    }

    /// Juliet offline with push to the app server `nurse@localhost/app`; Romeo writes.
    async fn offline_scene(config: Config, form: &str) -> (Arc<Server>, Client, Client) {
        let server = push_server(config).await;
        let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
        juliet
            .send(&enable("nurse@localhost/app", "dev1", form))
            .await;
        assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
        server.session_closed(&juliet.session).await;
        let app = Client::online(&server, "nurse@localhost/app", 0).await;
        let romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        (server, app, romeo)
    }

    fn publishes(app: &mut Client) -> Vec<Element> {
        std::iter::from_fn(|| app.recv()).collect()
    }

    #[tokio::test]
    async fn xep0357_7_an_offline_message_is_published_with_count_and_sender_and_no_body() {
        let (server, mut app, romeo) = offline_scene(Config::default(), "").await;
        romeo
            .send("<message to='juliet@localhost' type='chat'><body>Wherefore</body></message>")
            .await;
        romeo.send("<message to='juliet@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
        romeo
            .send("<message to='juliet@localhost' type='chat'><body>art thou</body></message>")
            .await;
        let got = publishes(&mut app);
        assert_eq!(got.len(), 2, "{got:?}");
        let first = got[0].to_xml();
        assert!(
            first.contains("from='juliet@localhost'") && first.contains("to='nurse@localhost/app'"),
            "{first}"
        );
        assert!(first.contains("<publish node='dev1'>"), "{first}");
        assert!(
            first.contains("var='message-count'><value>1</value>"),
            "{first}"
        );
        assert!(first.contains("romeo@localhost/orchard"), "{first}");
        assert!(!first.contains("Wherefore"), "{first}");
        assert!(!first.contains("publish-options"), "{first}");
        assert!(
            got[1]
                .to_xml()
                .contains("var='message-count'><value>2</value>")
        );
        // Back online (the stored messages are delivered): the count starts again.
        let juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        server.session_closed(&juliet.session).await;
        romeo
            .send("<message to='juliet@localhost' type='chat'><body>again</body></message>")
            .await;
        assert!(
            publishes(&mut app)[0]
                .to_xml()
                .contains("var='message-count'><value>1</value>")
        );
    }

    #[tokio::test]
    async fn xep0357_bodies_only_when_configured_and_opted_in_and_options_are_echoed() {
        let opt_in = options(
            "<field var='include-body'><value>true</value></field><field var='secret'><value>s</value></field>",
        );
        // Opted in, but the configuration forbids bodies.
        let (_server, mut app, romeo) = offline_scene(Config::default(), &opt_in).await;
        romeo
            .send("<message to='juliet@localhost' type='chat'><body>Wherefore</body></message>")
            .await;
        let got = publishes(&mut app)[0].to_xml();
        assert!(!got.contains("Wherefore"), "{got}");
        assert!(
            got.contains("<publish-options>") && got.contains("<value>s</value>"),
            "{got}"
        );
        // Allowed and opted in.
        let mut config = Config::default();
        config.push.include_body = true;
        let (_server, mut app, romeo) = offline_scene(config.clone(), &opt_in).await;
        romeo
            .send("<message to='juliet@localhost' type='chat'><body>Wherefore</body></message>")
            .await;
        assert!(
            publishes(&mut app)[0]
                .to_xml()
                .contains("<value>Wherefore</value>")
        );
        // Allowed but not opted in.
        let (_server, mut app, romeo) = offline_scene(config, "").await;
        romeo
            .send("<message to='juliet@localhost' type='chat'><body>Wherefore</body></message>")
            .await;
        assert!(!publishes(&mut app)[0].to_xml().contains("Wherefore"));
    }

    #[tokio::test]
    async fn xep0357_7_1_an_error_answer_disables_and_the_rate_is_capped() {
        let mut config = Config::default();
        config.push.max_per_minute = 2;
        let (server, mut app, romeo) = offline_scene(config, "").await;
        for i in 0..3 {
            romeo
                .send(&format!(
                    "<message to='juliet@localhost' id='m{i}'><body>{i}</body></message>"
                ))
                .await;
        }
        let got = publishes(&mut app);
        assert_eq!(got.len(), 2, "capped per minute: {got:?}");
        // A result keeps it; someone else's error for the same id does nothing.
        let id = got[0].attr("id").unwrap().to_owned();
        romeo.send(&format!("<iq type='error' id='{id}' to='juliet@localhost'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")).await;
        app.send(&format!(
            "<iq type='result' id='{id}' to='juliet@localhost'/>"
        ))
        .await;
        assert_eq!(
            server
                .store
                .push_registrations("juliet@localhost")
                .await
                .unwrap()
                .len(),
            1
        );
        let id = got[1].attr("id").unwrap().to_owned();
        app.send(&format!("<iq type='error' id='{id}' to='juliet@localhost'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")).await;
        assert!(
            server
                .store
                .push_registrations("juliet@localhost")
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_remote_app_server_without_federation_keeps_its_registration() {
        let push = Arc::new(Push::new());
        let server = server_with(
            Config::default(),
            vec![push.clone(), Arc::new(crate::offline::Offline)],
        )
        .await;
        let juliet = Client::bind(&server, "juliet@localhost/balcony").await;
        juliet.send(&enable("push.remote.example", "n", "")).await;
        server.session_closed(&juliet.session).await;
        let romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<message to='juliet@localhost'><body>hi</body></message>")
            .await;
        // The router answered remote-server-not-found to juliet@localhost; that answer was
        // taken as ours, and the registration stays.
        assert!(push.lock().pending.is_empty());
        assert_eq!(
            server
                .store
                .push_registrations("juliet@localhost")
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// Stands in for s2s: records what the router hands to federation.
    #[derive(Default)]
    struct Federated(Mutex<Vec<(String, Element)>>);

    #[async_trait::async_trait]
    impl franca_core::external::Federation for Federated {
        async fn send(&self, _server: &Arc<Server>, domain: &str, stanza: Element) {
            self.0.lock().unwrap().push((domain.to_owned(), stanza));
        }

        fn reachable(&self, _domain: &str) -> bool {
            true
        }
    }

    impl Federated {
        /// The publishes handed over since the last call.
        fn publishes(&self) -> Vec<(String, Element)> {
            std::mem::take(&mut *self.0.lock().unwrap())
                .into_iter()
                .filter(|(_, el)| el.name == "iq" && el.has_child("pubsub", NS_PUBSUB))
                .collect()
        }
    }

    /// An answer from the remote app server, as federation delivers it.
    fn remote_answer(id: &str, condition: Option<&str>) -> Element {
        let error = condition.map_or(String::new(), |c| {
            format!(
                "<error type='cancel'><{c} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
            )
        });
        let ty = if condition.is_some() {
            "error"
        } else {
            "result"
        };
        xml(&format!(
            "<iq type='{ty}' id='{id}' from='push.remote.example' to='juliet@localhost'>{error}</iq>"
        ))
    }

    #[tokio::test]
    async fn xep0357_7_a_remote_app_server_is_published_to_through_federation() {
        let push = Arc::new(Push::new());
        let server = server_with(
            Config::default(),
            vec![push.clone(), Arc::new(crate::offline::Offline)],
        )
        .await;
        let federation = Arc::new(Federated::default());
        server.federation.set(federation.clone());
        let registrations = || async {
            server
                .store
                .push_registrations("juliet@localhost")
                .await
                .unwrap()
                .len()
        };
        let juliet = Client::bind(&server, "juliet@localhost/balcony").await;
        juliet
            .send(&enable("push.remote.example", "dev1", ""))
            .await;
        server.session_closed(&juliet.session).await;
        let romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<message to='juliet@localhost'><body>one</body></message>")
            .await;
        let sent = federation.publishes();
        assert_eq!(sent.len(), 1, "{sent:?}");
        let (domain, iq) = &sent[0];
        assert_eq!(domain, "push.remote.example");
        assert_eq!(iq.attr("to"), Some("push.remote.example"));
        assert_eq!(iq.attr("from"), Some("juliet@localhost"));
        let xml_text = iq.to_xml();
        assert!(xml_text.contains("node='dev1'"), "{xml_text}");
        assert!(
            xml_text.contains("var='message-count'><value>1</value>"),
            "{xml_text}"
        );
        // Federation could not reach the domain this time: the registration stays.
        let id = iq.attr("id").unwrap().to_owned();
        server
            .route(remote_answer(&id, Some("remote-server-timeout")))
            .await;
        assert_eq!(registrations().await, 1);
        // The next message goes out again; the app server accepts it.
        romeo
            .send("<message to='juliet@localhost'><body>two</body></message>")
            .await;
        let sent = federation.publishes();
        assert_eq!(sent.len(), 1, "{sent:?}");
        let id = sent[0].1.attr("id").unwrap().to_owned();
        server.route(remote_answer(&id, None)).await;
        assert_eq!(registrations().await, 1);
        // Then it refuses one (§7.1): the registration is disabled, nothing more is sent.
        romeo
            .send("<message to='juliet@localhost'><body>three</body></message>")
            .await;
        let sent = federation.publishes();
        let id = sent[0].1.attr("id").unwrap().to_owned();
        server
            .route(remote_answer(&id, Some("item-not-found")))
            .await;
        assert_eq!(registrations().await, 0);
        romeo
            .send("<message to='juliet@localhost'><body>four</body></message>")
            .await;
        assert!(federation.publishes().is_empty());
    }

    #[tokio::test]
    async fn xep0198_a_hibernated_session_is_pushed_once_per_message_even_when_it_times_out() {
        use franca_core::detached::Hibernated;
        use franca_proto::sm::StreamManagement;
        let server = push_server(Config::default()).await;
        let mut app = Client::online(&server, "nurse@localhost/app", 0).await;
        let romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        let bound = server
            .bind(jid::FullJid::new("juliet@localhost/phone").unwrap())
            .await;
        let juliet = bound.session.clone();
        juliet.presence().available = true;
        server
            .route_from_session(&juliet, xml(&enable("nurse@localhost/app", "dev1", "")))
            .await;
        // Live: nothing is pushed.
        romeo
            .send("<message to='juliet@localhost' type='chat'><body>live</body></message>")
            .await;
        app.silent();
        let state = Hibernated {
            session: juliet.clone(),
            rx: bound.rx,
            sm: StreamManagement::new(10),
            timeout: Duration::from_secs(60),
        };
        server.detached.register("r1", juliet.clone());
        server
            .detached
            .hibernate("r1", state)
            .map_err(|_| ())
            .unwrap();
        romeo
            .send("<message to='juliet@localhost' type='chat'><body>one</body></message>")
            .await;
        romeo
            .send("<message to='juliet@localhost/phone' type='chat'><body>two</body></message>")
            .await;
        let got = publishes(&mut app);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[1]
                .to_xml()
                .contains("var='message-count'><value>2</value>")
        );
        // The resumption time ends: what was queued goes to offline storage. "one" and "two"
        // are not pushed (or counted) a second time; "live", which the client never
        // confirmed, is news.
        let Some(state) = server.detached.expire("r1", 1) else {
            panic!("not hibernated")
        };
        let Hibernated { session, rx, .. } = *state;
        server.end_session(&session, Some(rx), Vec::new()).await;
        let got = publishes(&mut app);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0]
                .to_xml()
                .contains("var='message-count'><value>3</value>")
        );
        assert_eq!(
            server
                .store
                .offline_count("juliet@localhost")
                .await
                .unwrap(),
            3
        );
        romeo
            .send("<message to='juliet@localhost' type='chat'><body>four</body></message>")
            .await;
        assert!(
            publishes(&mut app)[0]
                .to_xml()
                .contains("var='message-count'><value>4</value>")
        );
    }
}
