//! The router: the only road a stanza travels (DESIGN §2). It stamps and checks addresses, runs
//! the module hooks, and applies the RFC 6121 §8.5 delivery rules for local accounts. A stanza to
//! a local online user goes from the sender's reader to the recipient's queue with no storage
//! round trip, serialised once.

use crate::module::{Flow, IqRequest, IqTarget};
use crate::server::Server;
use crate::session::{Session, serialise};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond, error_reply};
use franca_xml::Element;
use futures_util::future::BoxFuture;
use jid::{BareJid, Jid};
use std::sync::Arc;

/// The kinds of stanza (RFC 6120 §8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    pub fn of(stanza: &Element) -> Option<Kind> {
        match stanza.name.as_str() {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }
}

fn parse_addr(stanza: &Element, attr: &str) -> Result<Option<Jid>, ()> {
    match stanza.attr(attr) {
        None => Ok(None),
        Some(s) => Jid::new(s).map(Some).map_err(|_| ()),
    }
}

/// The `type` of a message, with unknown values treated as `normal` (RFC 6121 §5.2.2).
fn message_type(stanza: &Element) -> &str {
    match stanza.attr("type") {
        Some(t @ ("chat" | "groupchat" | "headline" | "error")) => t,
        _ => "normal",
    }
}

impl Server {
    /// A stanza sent by a local client session.
    pub async fn route_from_session(self: &Arc<Self>, session: &Arc<Session>, mut stanza: Element) {
        metrics::counter!("franca_stanzas_in_total").increment(1);
        // RFC 6120 §8.1.2.1: the server stamps the full JID; what the client wrote is ignored.
        stanza.set_attr("from", session.jid.as_str());
        let to = match parse_addr(&stanza, "to") {
            Ok(to) => to,
            Err(()) => {
                return self
                    .reply_error(&stanza, StanzaError::new(Cond::JidMalformed))
                    .await;
            }
        };
        if let Some(to) = &to {
            // Keep the normalised form so every later comparison is exact.
            stanza.set_attr("to", to.as_str());
        }
        if Kind::of(&stanza) == Some(Kind::Iq)
            && let Err(e) = check_iq(&stanza)
        {
            return self.reply_error(&stanza, e).await;
        }
        for m in self.modules.iter() {
            if m.outbound(self, session, &mut stanza).await == Flow::Handled {
                return;
            }
        }
        if to.is_none() {
            // No 'to' means the sender's own account (RFC 6120 §10.3.3); a message is delivered
            // to the account's bare JID (§10.3.1).
            stanza.set_attr("to", session.jid.to_bare().as_str());
        }
        self.route(stanza).await;
    }

    /// Route a stanza whose `from` is already trusted (from a session, a module or the server).
    pub fn route(self: &Arc<Self>, stanza: Element) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(kind) = Kind::of(&stanza) else {
                return;
            };
            let to = match parse_addr(&stanza, "to") {
                Ok(Some(to)) => to,
                Ok(None) => return,
                Err(()) => {
                    return self
                        .reply_error(&stanza, StanzaError::new(Cond::JidMalformed))
                        .await;
                }
            };
            if !self.serves(to.domain().as_str()) {
                // Only here, off the path to accounts: a hosted service (MUC, …) answers
                // everything on its domain.
                if let Some(service) = self.service(to.domain().as_str()) {
                    return service.service_stanza(self, to, stanza).await;
                }
                // A connected component (XEP-0114) owns its whole domain.
                if let Some(component) = self.components.get(to.domain().as_str()) {
                    if !component.send(&stanza) {
                        self.reply_error(&stanza, StanzaError::new(Cond::ServiceUnavailable))
                            .await;
                    }
                    return;
                }
                // A configured component that is not connected now: the domain is still ours,
                // so it is never looked up or dialled as a remote server.
                if self
                    .config
                    .component
                    .iter()
                    .any(|c| c.domain == to.domain().as_str())
                {
                    return self
                        .reply_error(&stanza, StanzaError::new(Cond::ServiceUnavailable))
                        .await;
                }
                if let Some(federation) = self.federation.get() {
                    return federation.send(self, to.domain().as_str(), stanza).await;
                }
                // No federation: RFC 6120 §10.4.
                return self
                    .reply_error(&stanza, StanzaError::new(Cond::RemoteServerNotFound))
                    .await;
            }
            if to.node().is_none() {
                return self.to_server(kind, stanza, &to).await;
            }
            self.to_account(kind, stanza, to).await;
        })
    }

    /// Stanzas addressed to a served domain itself.
    async fn to_server(self: &Arc<Self>, kind: Kind, stanza: Element, to: &Jid) {
        match kind {
            Kind::Iq => {
                self.dispatch_iq(IqTarget::Server, None, stanza, to.clone())
                    .await
            }
            // RFC 6121 §8.5.1: the server handles or ignores messages and presence to itself.
            Kind::Message | Kind::Presence => {}
        }
    }

    /// RFC 6121 §8.5: stanzas to a local account, bare or full.
    async fn to_account(self: &Arc<Self>, kind: Kind, mut stanza: Element, to: Jid) {
        let bare = to.to_bare();
        if !self.account_exists(&bare).await {
            // §8.5.1: no such user. Messages and IQs get service-unavailable (which does not
            // reveal more than an absent resource would); presence is dropped silently.
            if kind != Kind::Presence {
                self.reply_error(&stanza, StanzaError::new(Cond::ServiceUnavailable))
                    .await;
            }
            return;
        }
        if self.inbound_hooks(&bare, &mut stanza).await == Flow::Handled {
            return;
        }
        match (kind, to.try_as_full()) {
            (_, Ok(full)) => match self.sessions.get(full) {
                Some(session) => {
                    metrics::counter!("franca_stanzas_delivered_total").increment(1);
                    if !session.send(&stanza) && kind == Kind::Message {
                        self.undeliverable(&bare, stanza).await;
                    } else if kind == Kind::Message && session.is_hibernated() {
                        self.queued_while_hibernated(&session, &stanza).await;
                    }
                }
                None => self.no_such_resource(kind, stanza, bare).await,
            },
            (Kind::Message, Err(_)) => self.message_to_bare(stanza, &bare).await,
            (Kind::Presence, Err(_)) => {
                // §8.5.2.1.2 (presence to the bare JID): every available resource.
                let xml = serialise(&stanza);
                for s in self.sessions.available(&bare) {
                    s.send_xml(xml.clone());
                }
            }
            (Kind::Iq, Err(_)) => {
                let origin = None;
                self.dispatch_iq(IqTarget::Account, origin, stanza, Jid::from(bare))
                    .await
            }
        }
    }

    /// The modules' inbound hooks for a stanza to the local account `to`, as [`Server::route`]
    /// runs them before delivery. Public for modules that deliver to sessions themselves (the
    /// presence broadcast picks its recipients per session) and must still pass the filters,
    /// such as blocking, that every routed stanza passes.
    pub async fn inbound_hooks(self: &Arc<Self>, to: &BareJid, stanza: &mut Element) -> Flow {
        for m in self.modules.iter() {
            if m.inbound(self, to, stanza).await == Flow::Handled {
                return Flow::Handled;
            }
        }
        Flow::Continue
    }

    /// §8.5.3.2: the full JID has no session.
    async fn no_such_resource(self: &Arc<Self>, kind: Kind, mut stanza: Element, bare: BareJid) {
        match kind {
            Kind::Message => match message_type(&stanza) {
                "normal" | "chat" | "headline" => {
                    // Treated as if sent to the bare JID.
                    stanza.set_attr("to", bare.as_str());
                    self.message_to_bare(stanza, &bare).await;
                }
                "error" => {}
                _ => {
                    self.reply_error(&stanza, StanzaError::new(Cond::ServiceUnavailable))
                        .await
                }
            },
            Kind::Presence => {}
            Kind::Iq => {
                if matches!(stanza.attr("type"), Some("get" | "set")) {
                    self.reply_error(&stanza, StanzaError::new(Cond::ServiceUnavailable))
                        .await;
                }
            }
        }
    }

    /// The resources a message to `bare` is delivered to (§8.5.2.1.1): the available resources
    /// with the highest non-negative priority, or all non-negative ones for headlines.
    pub fn message_targets(&self, bare: &BareJid, headline: bool) -> Vec<Arc<Session>> {
        let mut candidates: Vec<(i8, Arc<Session>)> = self
            .sessions
            .resources(bare)
            .into_iter()
            .filter_map(|s| {
                let p = s.presence();
                (p.available && p.priority >= 0)
                    .then_some(p.priority)
                    .map(|prio| (prio, s.clone()))
            })
            .collect();
        if !headline && let Some(max) = candidates.iter().map(|(p, _)| *p).max() {
            candidates.retain(|(p, _)| *p == max);
        }
        candidates.into_iter().map(|(_, s)| s).collect()
    }

    async fn message_to_bare(self: &Arc<Self>, stanza: Element, bare: &BareJid) {
        let kind = message_type(&stanza);
        match kind {
            "error" => return,
            "groupchat" => {
                return self
                    .reply_error(&stanza, StanzaError::new(Cond::ServiceUnavailable))
                    .await;
            }
            _ => {}
        }
        let targets = self.message_targets(bare, kind == "headline");
        if targets.is_empty() {
            if kind != "headline" {
                self.undeliverable(bare, stanza).await;
            }
            return;
        }
        let xml = serialise(&stanza);
        let mut delivered = false;
        let mut asleep = None;
        for s in targets {
            let queued = s.send_xml(xml.clone());
            if queued && s.is_hibernated() {
                asleep = Some(s);
            }
            delivered |= queued;
        }
        if delivered {
            metrics::counter!("franca_stanzas_delivered_total").increment(1);
            // Once per message, however many of the account's sessions sleep.
            if let Some(s) = asleep {
                self.queued_while_hibernated(&s, &stanza).await;
            }
        } else {
            self.undeliverable(bare, stanza).await;
        }
    }

    /// A message no session can take: offline storage if a module takes it, else a bounce.
    /// Public for the transports: the unacknowledged messages of a XEP-0198 session that ended
    /// without resumption take this road (XEP-0198 §5).
    pub async fn undeliverable(self: &Arc<Self>, bare: &BareJid, stanza: Element) {
        for m in self.modules.iter() {
            if m.undeliverable(self, bare, &stanza).await == Flow::Handled {
                return;
            }
        }
        self.reply_error(&stanza, StanzaError::new(Cond::ServiceUnavailable))
            .await;
    }

    /// Tell the modules that `stanza` was queued for the hibernated (XEP-0198) `session`.
    async fn queued_while_hibernated(self: &Arc<Self>, session: &Arc<Session>, stanza: &Element) {
        for m in self.modules.iter() {
            m.queued_while_hibernated(self, session, stanza).await;
        }
    }

    /// Hand an IQ to the module registered for its payload namespace, and route the answer.
    pub async fn dispatch_iq(
        self: &Arc<Self>,
        target: IqTarget,
        origin: Option<&Arc<Session>>,
        iq: Element,
        to: Jid,
    ) {
        if !matches!(iq.attr("type"), Some("get" | "set")) {
            return; // results and errors to the server are not awaited by anything yet
        }
        let from = match parse_addr(&iq, "from") {
            Ok(Some(from)) => from,
            _ => return,
        };
        // The requesting session, when the IQ came from a local one (modules such as carbons
        // act on it).
        let found;
        let origin = match origin {
            Some(o) => Some(o),
            None => {
                found = from.try_as_full().ok().and_then(|f| self.sessions.get(f));
                found.as_ref()
            }
        };
        let ns = iq.first_element().map(|p| p.ns.clone()).unwrap_or_default();
        let Some(module) = self.modules.iq_handler(target, &ns).cloned() else {
            return self
                .reply_error(&iq, StanzaError::new(Cond::ServiceUnavailable))
                .await;
        };
        let id = iq.attr("id").unwrap_or_default().to_owned();
        let req = IqRequest {
            origin,
            from: from.clone(),
            to: to.clone(),
            iq,
        };
        let reply = match module.handle_iq(self, req).await {
            Ok(payload) => {
                let mut result = Element::new("iq", franca_proto::ns::NS_CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", id)
                    .with_attr("from", to.as_str())
                    .with_attr("to", from.as_str());
                if let Some(p) = payload {
                    result.push(p);
                }
                result
            }
            Err(e) => Element::new("iq", franca_proto::ns::NS_CLIENT)
                .with_attr("type", "error")
                .with_attr("id", id)
                .with_attr("from", to.as_str())
                .with_attr("to", from.as_str())
                .with_child(e.to_element(franca_proto::ns::NS_CLIENT)),
        };
        self.route(reply).await;
    }

    /// Bounce `stanza` back to its sender with `error` (never bounces an error: §8.3.1).
    pub async fn reply_error(self: &Arc<Self>, stanza: &Element, error: StanzaError) {
        if let Some(reply) = error_reply(stanza, &error)
            && reply.attr("to").is_some()
        {
            self.route(reply).await;
        }
    }
}

/// RFC 6120 §8.2.3: an IQ needs an id and a known type; get/set carry exactly one payload.
fn check_iq(iq: &Element) -> Result<(), StanzaError> {
    let bad = || Err(StanzaError::new(Cond::BadRequest));
    if iq.attr("id").is_none() {
        return bad();
    }
    match iq.attr("type") {
        Some("get" | "set") if iq.elements().count() == 1 => Ok(()),
        Some("result") if iq.elements().count() <= 1 => Ok(()),
        Some("error") => Ok(()),
        _ => bad(),
    }
}
