//! XEP-0163 Personal Eventing Protocol on every account, on the XEP-0060 core in
//! [`crate::pubsub`]: the account's bare JID is the service and the owner key. Publishing
//! creates a node on first use (`#auto-create`) with the PEP defaults (`presence` access, one
//! item) or the publish-options given (`#publish-options`, which OMEMO relies on); items,
//! retraction, purge, deletion and configuration follow XEP-0060. Notifications go to the
//! owner's and allowed contacts' resources that announced `<node>+notify` in their XEP-0115
//! capabilities ([`caps`], [`notify`]). XEP-0084 avatars and XEP-0402 bookmarks are plain nodes
//! here; XEP-0223 private PEP is the `whitelist` model with persistent items.
//!
//! XEP-0049 private XML storage ([`private`]) keeps each element as the one item of a node
//! named `private:<namespace>|<name>` of the account: such nodes are whitelisted, never
//! published, listed or reachable through PubSub, and count towards `pep.max_nodes`.
//! `storage:bookmarks` (XEP-0048) is mapped onto the XEP-0402 node both ways.
//!
//! Explicit subscriptions (`<subscribe/>`) are not offered: PEP subscriptions are implied by
//! presence subscriptions and capabilities (XEP-0163 §4.3).
//!
//! With the vCard module on, XEP-0398 keeps XEP-0084 avatars and vCard PHOTOs in step and
//! stamps the XEP-0153 hash into available presence ([`avatar`]).

pub mod avatar;
pub mod caps;
pub mod notify;
pub mod private;

use crate::pubsub::access::may_see;
use crate::pubsub::config::NodeConfig;
use crate::pubsub::form::Form;
use crate::pubsub::service::{Service, publish_request, pubsub_error};
use crate::pubsub::{
    MAX_NAME_BYTES, NS_PUBSUB, NS_PUBSUB_ERRORS, NS_PUBSUB_OWNER, NS_PUBSUB_PUBLISH_OPTIONS, event,
};
use caps::{Caps, Seen};
use franca_core::{Flow, IqRequest, IqResult, IqTarget, Module, Server, Session, SessionEvent};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_CAPS, NS_DISCO_ITEMS};
use franca_xml::Element;
use jid::BareJid;
use notify::Ids;
use std::sync::Arc;

/// XEP-0049.
pub const NS_PRIVATE: &str = "jabber:iq:private";
/// XEP-0402.
pub const NS_BOOKMARKS2: &str = "urn:xmpp:bookmarks:1";

/// Prefix of the nodes that hold XEP-0049 private XML.
pub const PRIVATE_PREFIX: &str = "private:";

/// Item ids asked for in one retrieval, at most.
const MAX_IDS: usize = 256;

pub fn is_private(node: &str) -> bool {
    node.starts_with(PRIVATE_PREFIX)
}

pub struct Pep {
    pub caps: Caps,
    ids: Ids,
    /// XEP-0398 avatar hashes; `Some` when the conversion is on.
    avatars: Option<avatar::Hashes>,
}

impl Pep {
    pub fn new(caps_cache: usize) -> Pep {
        Pep {
            caps: Caps::new(caps_cache),
            ids: Ids::new(),
            avatars: None,
        }
    }

    /// Turn on XEP-0398 (the vCard module must hand vCard sets to [`avatar`]).
    pub fn with_vcard_conversion(mut self) -> Pep {
        self.avatars = Some(avatar::Hashes::default());
        self
    }

    /// The avatar hashes, when XEP-0398 conversion is on.
    pub fn avatars(&self) -> Option<&avatar::Hashes> {
        self.avatars.as_ref()
    }

    fn service<'a>(server: &'a Server, owner: &'a str) -> Service<'a> {
        Service {
            store: &*server.store,
            owner,
            max_nodes: server.config.pep.max_nodes,
            max_items: server.config.pep.max_items,
        }
    }

    /// Publish one `<item/>` to `node` of `owner` and notify. Used by the PubSub IQ and by
    /// the XEP-0048 mapping.
    pub(crate) async fn publish(
        &self,
        server: &Arc<Server>,
        owner: &BareJid,
        node: &str,
        item: &Element,
        options: Option<&Form>,
    ) -> Result<(), StanzaError> {
        let svc = Self::service(server, owner.as_str());
        let config = svc.publish(node, item, options, now_us()).await?;
        let ev = event::published(node, item);
        notify::broadcast(server, &self.caps, &self.ids, owner, node, &config, ev).await;
        Ok(())
    }

    /// Retract `id` from `node` and notify when the node says so (or `notify` asks).
    pub(crate) async fn retract(
        &self,
        server: &Arc<Server>,
        owner: &BareJid,
        node: &str,
        id: &str,
        notify: bool,
    ) -> Result<(), StanzaError> {
        let config = Self::service(server, owner.as_str())
            .retract(node, id)
            .await?;
        if notify || config.notify_retract {
            let ev = event::retracted(node, id);
            notify::broadcast(server, &self.caps, &self.ids, owner, node, &config, ev).await;
        }
        Ok(())
    }

    fn new_item_id(&self) -> String {
        self.ids.next()
    }

    async fn pubsub(
        &self,
        server: &Arc<Server>,
        req: &IqRequest<'_>,
        pubsub: &Element,
    ) -> IqResult {
        let owner = req.to.to_bare();
        let requester = req.from.to_bare();
        let Some(verb) = pubsub
            .elements()
            .find(|e| e.ns == NS_PUBSUB && e.name != "publish-options" && e.name != "configure")
        else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        let node = node_name(verb)?;
        let svc = Self::service(server, owner.as_str());
        match (verb.name.as_str(), req.is_set()) {
            ("items", false) => {
                let config = svc.existing(node).await?;
                if requester != owner {
                    let item = roster_item(server, &owner, &requester).await?;
                    may_see(&config, owner.as_str(), requester.as_str(), item.as_ref())?;
                }
                let ids: Vec<String> = verb
                    .elements()
                    .filter(|e| e.is("item", NS_PUBSUB))
                    .filter_map(|e| e.attr("id").map(str::to_owned))
                    .take(MAX_IDS + 1)
                    .collect();
                if ids.len() > MAX_IDS {
                    return Err(StanzaError::new(Cond::NotAcceptable));
                }
                let cap = server.config.pep.max_items;
                let max = match verb.attr("max_items") {
                    None => cap,
                    Some(m) => m
                        .parse::<u32>()
                        .map_err(|_| StanzaError::new(Cond::BadRequest))?
                        .min(cap),
                };
                let mut items = Element::new("items", NS_PUBSUB).with_attr("node", node);
                for item in svc.items(node, &ids, max).await? {
                    items.push(item);
                }
                Ok(Some(Element::new("pubsub", NS_PUBSUB).with_child(items)))
            }
            (_, _) if requester != owner => Err(StanzaError::new(Cond::Forbidden)),
            ("publish" | "retract" | "create", false) => Err(StanzaError::new(Cond::BadRequest)),
            ("publish", true) => {
                let (id, stored) = publish_request(verb, || self.new_item_id())?;
                let options = options_form(pubsub)?;
                // XEP-0398 §3.1, decided first: an avatar the vCard cannot hold is refused.
                let to_vcard = match &self.avatars {
                    Some(_) if node == avatar::NS_AVATAR_METADATA => {
                        Some(avatar::vcard_for_metadata(server, &owner, &stored).await?)
                    }
                    _ => None,
                };
                self.publish(server, &owner, node, &stored, options.as_ref())
                    .await?;
                if let (Some(change), Some(hashes)) = (to_vcard, &self.avatars) {
                    avatar::store_vcard(hashes, server, &owner, change).await?;
                }
                let ack = Element::new("publish", NS_PUBSUB)
                    .with_attr("node", node)
                    .with_child(Element::new("item", NS_PUBSUB).with_attr("id", id));
                Ok(Some(Element::new("pubsub", NS_PUBSUB).with_child(ack)))
            }
            ("retract", true) => {
                let notify = verb.attr("notify").is_some_and(|n| n == "1" || n == "true");
                let ids: Vec<&str> = verb
                    .elements()
                    .filter(|e| e.is("item", NS_PUBSUB))
                    .filter_map(|e| e.attr("id"))
                    .take(MAX_IDS + 1)
                    .collect();
                if ids.is_empty() {
                    return Err(pubsub_error(Cond::BadRequest, "item-required"));
                }
                if ids.len() > MAX_IDS {
                    return Err(StanzaError::new(Cond::NotAcceptable));
                }
                for id in ids {
                    self.retract(server, &owner, node, id, notify).await?;
                }
                Ok(None)
            }
            ("create", true) => {
                let mut config = NodeConfig::default();
                if let Some(x) = pubsub
                    .child("configure", NS_PUBSUB)
                    .and_then(|c| c.child("x", franca_proto::ns::NS_DATA_FORMS))
                {
                    config.apply(&Form::parse(x)?)?;
                }
                svc.create(node, &config).await?;
                Ok(None)
            }
            (name, _) => Err(StanzaError::new(Cond::FeatureNotImplemented).with_app(
                Element::new("unsupported", NS_PUBSUB_ERRORS)
                    .with_attr("feature", unsupported(name)),
            )),
        }
    }

    async fn owner(&self, server: &Arc<Server>, req: &IqRequest<'_>, pubsub: &Element) -> IqResult {
        let owner = req.to.to_bare();
        if !req.from_self() {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let Some(verb) = pubsub.first_element() else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        let svc = Self::service(server, owner.as_str());
        if verb.name == "default" && !req.is_set() {
            let form = NodeConfig::default().to_form("form");
            let default = Element::new("default", NS_PUBSUB_OWNER).with_child(form);
            return Ok(Some(
                Element::new("pubsub", NS_PUBSUB_OWNER).with_child(default),
            ));
        }
        let node = node_name(verb)?;
        match (verb.name.as_str(), req.is_set()) {
            ("configure", false) => {
                let config = svc.existing(node).await?;
                let configure = Element::new("configure", NS_PUBSUB_OWNER)
                    .with_attr("node", node)
                    .with_child(config.to_form("form"));
                Ok(Some(
                    Element::new("pubsub", NS_PUBSUB_OWNER).with_child(configure),
                ))
            }
            ("configure", true) => {
                let mut config = svc.existing(node).await?;
                let Some(x) = verb.child("x", franca_proto::ns::NS_DATA_FORMS) else {
                    return Err(StanzaError::new(Cond::BadRequest));
                };
                if x.attr("type") == Some("cancel") {
                    return Ok(None);
                }
                config.apply(&Form::parse(x)?)?;
                svc.configure(node, &config).await?;
                Ok(None)
            }
            ("delete", true) => {
                // Recipients first: the node's access rules are gone afterwards.
                let config = svc.existing(node).await?;
                let to = notify::recipients(server, &self.caps, &owner, node, &config).await;
                svc.delete(node).await?;
                if config.notify_delete {
                    notify::send(server, &self.ids, &owner, &to, event::deleted(node)).await;
                }
                Ok(None)
            }
            ("purge", true) => {
                let config = svc.purge(node).await?;
                let to = notify::recipients(server, &self.caps, &owner, node, &config).await;
                notify::send(server, &self.ids, &owner, &to, event::purged(node)).await;
                Ok(None)
            }
            ("affiliations", false) => {
                let config = svc.existing(node).await?;
                let mut affs =
                    Element::new("affiliations", NS_PUBSUB_OWNER).with_attr("node", node);
                affs.push(aff(owner.as_str(), "owner"));
                for j in &config.whitelist {
                    affs.push(aff(j, "member"));
                }
                Ok(Some(
                    Element::new("pubsub", NS_PUBSUB_OWNER).with_child(affs),
                ))
            }
            ("affiliations", true) => {
                // §8.9.2: the whitelist is the list of members.
                let mut config = svc.existing(node).await?;
                for a in verb
                    .elements()
                    .filter(|e| e.is("affiliation", NS_PUBSUB_OWNER))
                {
                    let jid = a
                        .attr("jid")
                        .and_then(|j| BareJid::new(j).ok())
                        .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
                    config.whitelist.retain(|j| j != jid.as_str());
                    match a.attr("affiliation") {
                        Some("member" | "publisher") => config.whitelist.push(jid.to_string()),
                        Some("none" | "outcast") => {}
                        _ => return Err(StanzaError::new(Cond::NotAcceptable)),
                    }
                    if config.whitelist.len() > 256 {
                        return Err(StanzaError::new(Cond::ResourceConstraint));
                    }
                }
                svc.configure(node, &config).await?;
                Ok(None)
            }
            (name, _) => Err(StanzaError::new(Cond::FeatureNotImplemented).with_app(
                Element::new("unsupported", NS_PUBSUB_ERRORS)
                    .with_attr("feature", unsupported(name)),
            )),
        }
    }

    /// XEP-0030 disco#items on the account: the nodes `requester` may see.
    pub async fn disco_items(
        server: &Arc<Server>,
        owner: &BareJid,
        requester: &BareJid,
    ) -> Vec<Element> {
        let svc = Self::service(server, owner.as_str());
        let Ok(nodes) = svc.nodes().await else {
            return Vec::new();
        };
        let item = if owner == requester {
            None
        } else {
            roster_item(server, owner, requester).await.ok().flatten()
        };
        nodes
            .iter()
            .filter(|n| !is_private(&n.name))
            .filter(|n| {
                may_see(&n.config, owner.as_str(), requester.as_str(), item.as_ref()).is_ok()
            })
            .map(|n| {
                Element::new("item", NS_DISCO_ITEMS)
                    .with_attr("jid", owner.as_str())
                    .with_attr("node", n.name.as_str())
            })
            .collect()
    }
}

fn aff(jid: &str, affiliation: &str) -> Element {
    Element::new("affiliation", NS_PUBSUB_OWNER)
        .with_attr("jid", jid)
        .with_attr("affiliation", affiliation)
}

fn unsupported(verb: &str) -> &'static str {
    match verb {
        "subscribe" | "unsubscribe" | "options" => "subscribe",
        "subscriptions" => "retrieve-subscriptions",
        "affiliations" => "retrieve-affiliations",
        "default" => "retrieve-default",
        _ => "",
    }
}

/// The `node` attribute: present, bounded, and not one of the private storage nodes.
fn node_name(verb: &Element) -> Result<&str, StanzaError> {
    match verb.attr("node") {
        None | Some("") => Err(pubsub_error(Cond::BadRequest, "nodeid-required")),
        Some(n) if n.len() > MAX_NAME_BYTES => Err(StanzaError::new(Cond::NotAcceptable)),
        Some(n) if is_private(n) => Err(StanzaError::new(Cond::ItemNotFound)),
        Some(n) => Ok(n),
    }
}

/// The `<publish-options/>` form, if any (XEP-0060 §7.1.5).
fn options_form(pubsub: &Element) -> Result<Option<Form>, StanzaError> {
    let Some(x) = pubsub
        .child("publish-options", NS_PUBSUB)
        .and_then(|p| p.child("x", franca_proto::ns::NS_DATA_FORMS))
    else {
        return Ok(None);
    };
    let form = Form::parse(x)?;
    if form
        .form_type
        .as_deref()
        .is_some_and(|t| t != NS_PUBSUB_PUBLISH_OPTIONS)
    {
        return Err(StanzaError::new(Cond::BadRequest));
    }
    Ok(Some(form))
}

async fn roster_item(
    server: &Server,
    owner: &BareJid,
    requester: &BareJid,
) -> Result<Option<franca_store::RosterItem>, StanzaError> {
    server
        .store
        .roster_item(owner.as_str(), requester.as_str())
        .await
        .map_err(|e| {
            tracing::error!(%owner, "storage error reading roster item: {e}");
            StanzaError::new(Cond::InternalServerError)
        })
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The account's disco#info features; the last one only with XEP-0398 conversion on.
const FEATURES: &[&str] = &[
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#modify-affiliations",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    NS_PRIVATE,
    "urn:xmpp:bookmarks:1#compat",
    avatar::NS_CONVERSION,
];

#[async_trait::async_trait]
impl Module for Pep {
    fn name(&self) -> &'static str {
        "pep"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[
            (IqTarget::Account, NS_PUBSUB),
            (IqTarget::Account, NS_PUBSUB_OWNER),
            (IqTarget::Account, NS_PRIVATE),
        ]
    }

    fn account_features(&self) -> &'static [&'static str] {
        match FEATURES.split_last() {
            Some((_, without)) if self.avatars.is_none() => without,
            _ => FEATURES,
        }
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        let Some(payload) = req.payload() else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        if !server.serves(req.to.domain().as_str()) || req.to.node().is_none() {
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        let payload = payload.clone();
        match (payload.name.as_str(), payload.ns.as_str()) {
            ("pubsub", NS_PUBSUB) => self.pubsub(server, &req, &payload).await,
            ("pubsub", NS_PUBSUB_OWNER) => self.owner(server, &req, &payload).await,
            ("query", NS_PRIVATE) => private::handle(self, server, &req, &payload).await,
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }

    async fn outbound(
        &self,
        server: &Arc<Server>,
        session: &Arc<Session>,
        stanza: &mut Element,
    ) -> Flow {
        // Cheap checks first: this runs for every stanza a client sends.
        if stanza.name != "presence" {
            return Flow::Continue;
        }
        // XEP-0398 §4: every available presence, directed ones (MUC joins) too.
        if let Some(hashes) = &self.avatars
            && stanza.attr("type").is_none()
            && let Some(hash) = avatar::current(server, hashes, &session.jid.to_bare()).await
        {
            avatar::stamp(stanza, hash.as_deref());
        }
        if stanza.attr("to").is_some() {
            return Flow::Continue;
        }
        match stanza.attr("type") {
            None => {}
            Some("unavailable") => {
                self.caps.gone(&session.jid);
                return Flow::Continue;
            }
            Some(_) => return Flow::Continue,
        }
        match self.caps.presence(&session.jid, stanza.child("c", NS_CAPS)) {
            Seen::Nothing => {}
            Seen::Known { features, initial } => {
                if initial {
                    let max = server.config.pep.max_nodes;
                    notify::last_items(server, &self.ids, &session.jid, &features, max).await;
                }
            }
            Seen::Query(iq) => server.route(iq).await,
        }
        Flow::Continue
    }

    async fn inbound(&self, server: &Arc<Server>, _to: &BareJid, stanza: &mut Element) -> Flow {
        if stanza.name != "iq" || !matches!(stanza.attr("type"), Some("result" | "error")) {
            return Flow::Continue;
        }
        let Some(initial) = self.caps.answer(stanza) else {
            return Flow::Continue;
        };
        let max = server.config.pep.max_nodes;
        for (jid, features) in initial {
            notify::last_items(server, &self.ids, &jid, &features, max).await;
        }
        Flow::Handled
    }

    async fn session_event(&self, server: &Arc<Server>, event: &SessionEvent) {
        if let SessionEvent::Closed(session) = event {
            self.caps.gone(&session.jid);
            let user = session.jid.to_bare();
            if let Some(hashes) = &self.avatars
                && server.sessions.resources(&user).is_empty()
            {
                hashes.forget(&user);
            }
        }
    }

    async fn user_removed(&self, _server: &Arc<Server>, user: &BareJid) {
        if let Some(hashes) = &self.avatars {
            hashes.forget(user);
        }
    }
}

#[cfg(test)]
mod tests;
