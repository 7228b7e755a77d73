//! XEP-0060 Publish-Subscribe as a service of its own, at `pubsub.<domain>` (the subdomain set
//! by `[pubsub] subdomain`), hosted through the core's service registry like group chat. Nodes
//! and items live in the same store and go through the same core ([`crate::pubsub::service`])
//! as PEP, with the service's JID as the owner key; what differs from PEP is decided here:
//!
//! - who owns a node: the account that created it (`owners` in the node's configuration, with
//!   server admins always owners), and who may create one (`[pubsub] create`);
//! - who may see a node: the `open` and `whitelist` access models (a service has no roster, so
//!   `presence` and `roster` are refused as unsupported);
//! - who is notified: the JIDs that subscribed explicitly (stored, migration 0007), each still
//!   checked against the access model when an event goes out, since a whitelist may shrink.
//!
//! Only owners publish (the XEP-0060 `publishers` model with no extra publishers); members of a
//! whitelist node may read and subscribe. The last item goes to a new subscriber (§6.1.7).

use crate::pubsub::access::may_see;
use crate::pubsub::config::{AccessModel, MaxItems, NodeConfig, is_private_field};
use crate::pubsub::form::Form;
use crate::pubsub::service::{Service, publish_request, pubsub_error};
use crate::pubsub::{
    MAX_NAME_BYTES, NS_PUBSUB, NS_PUBSUB_ERRORS, NS_PUBSUB_OWNER, NS_PUBSUB_PUBLISH_OPTIONS, event,
};
use franca_core::config::RoomCreation;
use franca_core::util::now_us;
use franca_core::{HostedService, Module, Server};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond, error_reply};
use franca_proto::ns::{NS_CLIENT, NS_DATA_FORMS, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING};
use franca_xml::Element;
use jid::{BareJid, Jid};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The name disco gives the service.
pub const SERVICE_NAME: &str = "Publish-Subscribe";

/// Most nodes one disco#items answer lists.
pub const MAX_LISTED_NODES: usize = 1000;

/// Most item ids one request names (retrieve or retract).
const MAX_IDS: usize = 100;

/// Most owners and members a node lists.
const MAX_AFFILIATIONS: usize = 256;

/// The features of the service (XEP-0060 §10).
const FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#instant-nodes",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#manage-subscriptions",
    "http://jabber.org/protocol/pubsub#modify-affiliations",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#subscribe",
];

pub struct PubsubService {
    domains: HashSet<String>,
    /// Item and notification ids: unique within this process, prefixed with its start time.
    counter: AtomicU64,
    epoch: i64,
}

type IqResult = Result<Option<Element>, StanzaError>;

impl PubsubService {
    pub fn new(config: &franca_core::Config) -> PubsubService {
        PubsubService {
            domains: config
                .pubsub
                .service_domains(&config.server.domains)
                .into_iter()
                .collect(),
            counter: AtomicU64::new(0),
            epoch: now_us(),
        }
    }

    fn next_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{n:x}", self.epoch)
    }

    fn core<'a>(server: &'a Server, service: &'a str) -> Service<'a> {
        Service {
            store: &*server.store,
            owner: service,
            max_nodes: server.config.pubsub.max_nodes,
            max_items: server.config.pubsub.max_items,
        }
    }

    async fn handle(&self, server: &Arc<Server>, to: Jid, stanza: Element) {
        let Some(Ok(from)) = stanza.attr("from").map(Jid::new) else {
            return;
        };
        let reply = if stanza.name != "iq" {
            // Messages and presence to the service mean nothing here.
            if stanza.name == "message" {
                error_reply(&stanza, &StanzaError::new(Cond::ServiceUnavailable))
            } else {
                None
            }
        } else if to.node().is_some() || to.resource().is_some() {
            error_reply(&stanza, &StanzaError::new(Cond::ServiceUnavailable))
        } else {
            let set = match stanza.attr("type") {
                Some("get") => false,
                Some("set") => true,
                _ => return,
            };
            let service = to.domain().as_str();
            let req = Req {
                service,
                from: &from,
                requester: from.to_bare(),
                set,
            };
            let mut after = Vec::new();
            let answer = self.iq(server, &req, &stanza, &mut after).await;
            let reply = match answer {
                Ok(payload) => Some(iq_result(&stanza, payload)),
                Err(e) => error_reply(&stanza, &e),
            };
            if let Some(r) = reply {
                server.route(r).await;
            }
            // Notifications follow the answer, so a publisher sees its result first.
            for n in after {
                server.route(n).await;
            }
            return;
        };
        if let Some(r) = reply {
            server.route(r).await;
        }
    }

    async fn iq(
        &self,
        server: &Arc<Server>,
        req: &Req<'_>,
        stanza: &Element,
        after: &mut Vec<Element>,
    ) -> IqResult {
        let mut children = stanza.elements();
        let (Some(q), None) = (children.next(), children.next()) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        match (q.name.as_str(), q.ns.as_str(), req.set) {
            ("query", NS_DISCO_INFO, false) => self.disco_info(server, req, q).await,
            ("query", NS_DISCO_ITEMS, false) => self.disco_items(server, req, q).await,
            ("ping", NS_PING, false) => Ok(None),
            ("pubsub", NS_PUBSUB, _) => self.pubsub(server, req, q, after).await,
            ("pubsub", NS_PUBSUB_OWNER, _) => self.owner(server, req, q, after).await,
            _ => Err(StanzaError::new(Cond::ServiceUnavailable)),
        }
    }

    async fn disco_info(&self, server: &Server, req: &Req<'_>, q: &Element) -> IqResult {
        let mut out = Element::new("query", NS_DISCO_INFO);
        match q.attr("node") {
            None => {
                out.push(identity("service", Some(SERVICE_NAME)));
                for f in FEATURES {
                    out.push(Element::new("feature", NS_DISCO_INFO).with_attr("var", *f));
                }
            }
            Some(node) => {
                let config = Self::core(server, req.service).existing(node).await?;
                req.may_see(server, &config)?;
                out.set_attr("node", node);
                out.push(identity("leaf", None));
                out.push(Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_PUBSUB));
            }
        }
        Ok(Some(out))
    }

    async fn disco_items(&self, server: &Server, req: &Req<'_>, q: &Element) -> IqResult {
        let core = Self::core(server, req.service);
        let mut out = Element::new("query", NS_DISCO_ITEMS);
        match q.attr("node") {
            None => {
                let nodes = core.nodes().await?;
                for n in nodes
                    .iter()
                    .filter(|n| req.may_see(server, &n.config).is_ok())
                    .take(MAX_LISTED_NODES)
                {
                    out.push(
                        Element::new("item", NS_DISCO_ITEMS)
                            .with_attr("jid", req.service)
                            .with_attr("node", n.name.as_str()),
                    );
                }
            }
            Some(node) => {
                // §5.5: the items of a node, by id.
                let config = core.existing(node).await?;
                req.may_see(server, &config)?;
                out.set_attr("node", node);
                for item in core
                    .items(node, &[], server.config.pubsub.max_items)
                    .await?
                {
                    if let Some(id) = item.attr("id") {
                        out.push(
                            Element::new("item", NS_DISCO_ITEMS)
                                .with_attr("jid", req.service)
                                .with_attr("name", id),
                        );
                    }
                }
            }
        }
        Ok(Some(out))
    }

    async fn pubsub(
        &self,
        server: &Arc<Server>,
        req: &Req<'_>,
        pubsub: &Element,
        after: &mut Vec<Element>,
    ) -> IqResult {
        let Some(verb) = pubsub.elements().find(|e| {
            e.ns == NS_PUBSUB
                && !matches!(e.name.as_str(), "publish-options" | "configure" | "options")
        }) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        let core = Self::core(server, req.service);
        match (verb.name.as_str(), req.set) {
            ("create", true) => {
                if !req.may_create(server) {
                    return Err(StanzaError::new(Cond::Forbidden));
                }
                // §8.1.2: no name asks for an instant node, named by the service.
                let (name, instant) = match verb.attr("node") {
                    None | Some("") => (self.next_id(), true),
                    Some(_) => (node_name(verb)?.to_owned(), false),
                };
                let mut config = req.new_config();
                if let Some(x) = pubsub
                    .child("configure", NS_PUBSUB)
                    .and_then(|c| c.child("x", NS_DATA_FORMS))
                {
                    apply_client_form(&mut config, &Form::parse(x)?)?;
                }
                core.create(&name, &config).await?;
                Ok(instant.then(|| {
                    Element::new("pubsub", NS_PUBSUB)
                        .with_child(Element::new("create", NS_PUBSUB).with_attr("node", name))
                }))
            }
            ("publish", true) => {
                let node = node_name(verb)?;
                let (id, stored) = publish_request(verb, || self.next_id())?;
                let options = options_form(pubsub)?;
                match core.node(node).await? {
                    Some(config) => {
                        if !req.owns(server, &config) {
                            return Err(StanzaError::new(Cond::Forbidden));
                        }
                    }
                    // §7.1.4 auto-create: for whoever may create nodes, as its owner, with
                    // the publish-options as configuration.
                    None if req.may_create(server) => {
                        let mut config = req.new_config();
                        if let Some(o) = &options {
                            apply_client_form(&mut config, o)
                                .map_err(|_| crate::pubsub::service::precondition_not_met())?;
                        }
                        core.create(node, &config).await?;
                    }
                    None => return Err(StanzaError::new(Cond::ItemNotFound)),
                }
                let config = core
                    .publish(node, &stored, options.as_ref(), now_us())
                    .await?;
                self.notify(
                    server,
                    req,
                    node,
                    &config,
                    event::published(node, &stored),
                    after,
                )
                .await;
                let ack = Element::new("publish", NS_PUBSUB)
                    .with_attr("node", node)
                    .with_child(Element::new("item", NS_PUBSUB).with_attr("id", id));
                Ok(Some(Element::new("pubsub", NS_PUBSUB).with_child(ack)))
            }
            ("retract", true) => {
                let node = node_name(verb)?;
                let config = core.existing(node).await?;
                if !req.owns(server, &config) {
                    return Err(StanzaError::new(Cond::Forbidden));
                }
                let notify = verb.attr("notify").is_some_and(|n| n == "1" || n == "true");
                let ids = item_ids(verb)?;
                if ids.is_empty() {
                    return Err(pubsub_error(Cond::BadRequest, "item-required"));
                }
                for id in ids {
                    let config = core.retract(node, &id).await?;
                    if notify || config.notify_retract {
                        let ev = event::retracted(node, &id);
                        self.notify(server, req, node, &config, ev, after).await;
                    }
                }
                Ok(None)
            }
            ("items", false) => {
                let node = node_name(verb)?;
                let config = core.existing(node).await?;
                req.may_see(server, &config)?;
                let ids = item_ids(verb)?;
                let cap = server.config.pubsub.max_items;
                let max = match verb.attr("max_items") {
                    None => cap,
                    Some(m) => m
                        .parse::<u32>()
                        .map_err(|_| StanzaError::new(Cond::BadRequest))?
                        .min(cap),
                };
                let mut items = Element::new("items", NS_PUBSUB).with_attr("node", node);
                for item in core.items(node, &ids, max).await? {
                    items.push(item);
                }
                Ok(Some(Element::new("pubsub", NS_PUBSUB).with_child(items)))
            }
            ("subscribe", true) => {
                let node = node_name(verb)?;
                let jid = req.own_jid(verb)?;
                let config = core.existing(node).await?;
                req.may_see(server, &config)?;
                let max = u32::try_from(server.config.pubsub.max_subscriptions).unwrap_or(u32::MAX);
                let stored = server
                    .store
                    .subscribe_pubsub(req.service, node, &jid, max)
                    .await
                    .map_err(internal)?;
                if !stored {
                    return Err(StanzaError::new(Cond::ResourceConstraint));
                }
                // §6.1.7: the last published item goes to the new subscriber.
                if let Some(last) = core.items(node, &[], 1).await?.pop() {
                    let ev = event::published(node, &last);
                    after.push(event::message(req.service, &jid, &self.next_id(), ev));
                }
                let sub = Element::new("subscription", NS_PUBSUB)
                    .with_attr("node", node)
                    .with_attr("jid", jid.as_str())
                    .with_attr("subscription", "subscribed");
                Ok(Some(Element::new("pubsub", NS_PUBSUB).with_child(sub)))
            }
            ("unsubscribe", true) => {
                let node = node_name(verb)?;
                let jid = req.own_jid(verb)?;
                core.existing(node).await?;
                let removed = server
                    .store
                    .unsubscribe_pubsub(req.service, node, &jid)
                    .await
                    .map_err(internal)?;
                if removed {
                    Ok(None)
                } else {
                    Err(pubsub_error(Cond::UnexpectedRequest, "not-subscribed"))
                }
            }
            ("create" | "publish" | "retract" | "subscribe" | "unsubscribe", false)
            | ("items", true) => Err(StanzaError::new(Cond::BadRequest)),
            (name, _) => Err(unsupported(match name {
                "subscriptions" => "retrieve-subscriptions",
                "affiliations" => "retrieve-affiliations",
                _ => "",
            })),
        }
    }

    async fn owner(
        &self,
        server: &Arc<Server>,
        req: &Req<'_>,
        pubsub: &Element,
        after: &mut Vec<Element>,
    ) -> IqResult {
        let Some(verb) = pubsub.first_element() else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        if verb.name == "default" && !req.set {
            let form = req.new_config().to_form("form");
            let default = Element::new("default", NS_PUBSUB_OWNER).with_child(form);
            return Ok(Some(
                Element::new("pubsub", NS_PUBSUB_OWNER).with_child(default),
            ));
        }
        let node = node_name(verb)?;
        let core = Self::core(server, req.service);
        let mut config = core.existing(node).await?;
        if !req.owns(server, &config) {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let owner_reply = |child: Element| {
            Ok(Some(
                Element::new("pubsub", NS_PUBSUB_OWNER).with_child(child),
            ))
        };
        match (verb.name.as_str(), req.set) {
            ("configure", false) => owner_reply(
                Element::new("configure", NS_PUBSUB_OWNER)
                    .with_attr("node", node)
                    .with_child(config.to_form("form")),
            ),
            ("configure", true) => {
                let Some(x) = verb.child("x", NS_DATA_FORMS) else {
                    return Err(StanzaError::new(Cond::BadRequest));
                };
                if x.attr("type") == Some("cancel") {
                    return Ok(None);
                }
                apply_client_form(&mut config, &Form::parse(x)?)?;
                core.configure(node, &config).await?;
                Ok(None)
            }
            ("delete", true) => {
                // Recipients first: the subscriptions go with the node.
                let to = self.subscribers(server, req, node, &config).await;
                core.delete(node).await?;
                if config.notify_delete {
                    for jid in to {
                        let ev = event::deleted(node);
                        after.push(event::message(req.service, &jid, &self.next_id(), ev));
                    }
                }
                Ok(None)
            }
            ("purge", true) => {
                core.purge(node).await?;
                self.notify(server, req, node, &config, event::purged(node), after)
                    .await;
                Ok(None)
            }
            ("subscriptions", false) => {
                let jids = server
                    .store
                    .pubsub_subscribers(req.service, node)
                    .await
                    .map_err(internal)?;
                let mut subs =
                    Element::new("subscriptions", NS_PUBSUB_OWNER).with_attr("node", node);
                for j in jids {
                    subs.push(
                        Element::new("subscription", NS_PUBSUB_OWNER)
                            .with_attr("jid", j)
                            .with_attr("subscription", "subscribed"),
                    );
                }
                owner_reply(subs)
            }
            ("affiliations", false) => {
                let mut affs =
                    Element::new("affiliations", NS_PUBSUB_OWNER).with_attr("node", node);
                for j in &config.owners {
                    affs.push(aff(j, "owner"));
                }
                for j in &config.whitelist {
                    affs.push(aff(j, "member"));
                }
                owner_reply(affs)
            }
            ("affiliations", true) => {
                for a in verb
                    .elements()
                    .filter(|e| e.is("affiliation", NS_PUBSUB_OWNER))
                {
                    let jid = a
                        .attr("jid")
                        .and_then(|j| BareJid::new(j).ok())
                        .ok_or_else(|| StanzaError::new(Cond::BadRequest))?
                        .to_string();
                    config.owners.retain(|j| *j != jid);
                    config.whitelist.retain(|j| *j != jid);
                    match a.attr("affiliation") {
                        Some("owner") => config.owners.push(jid),
                        Some("member" | "publisher") => config.whitelist.push(jid),
                        Some("none" | "outcast") => {}
                        _ => return Err(StanzaError::new(Cond::NotAcceptable)),
                    }
                    if config.owners.len() + config.whitelist.len() > MAX_AFFILIATIONS {
                        return Err(StanzaError::new(Cond::ResourceConstraint));
                    }
                }
                // A node nobody owns could only be managed by the admins.
                if config.owners.is_empty() {
                    return Err(StanzaError::new(Cond::NotAcceptable)
                        .with_text("a node keeps at least one owner"));
                }
                core.configure(node, &config).await?;
                Ok(None)
            }
            (name, _) => Err(unsupported(match name {
                "subscriptions" => "manage-subscriptions",
                "affiliations" => "modify-affiliations",
                "default" => "retrieve-default",
                _ => "",
            })),
        }
    }

    /// The subscribers of `node` who may still see it.
    async fn subscribers(
        &self,
        server: &Server,
        req: &Req<'_>,
        node: &str,
        config: &NodeConfig,
    ) -> Vec<String> {
        let jids = match server.store.pubsub_subscribers(req.service, node).await {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(service = req.service, node, "cannot read subscribers: {e}");
                return Vec::new();
            }
        };
        jids.into_iter()
            .filter(|j| {
                let bare = Jid::new(j).map(|j| j.to_bare());
                bare.is_ok_and(|b| visible(server, req.service, config, &b))
            })
            .collect()
    }

    /// Queue `event` for every subscriber who may see the node.
    async fn notify(
        &self,
        server: &Server,
        req: &Req<'_>,
        node: &str,
        config: &NodeConfig,
        ev: Element,
        after: &mut Vec<Element>,
    ) {
        for jid in self.subscribers(server, req, node, config).await {
            after.push(event::message(
                req.service,
                &jid,
                &self.next_id(),
                ev.clone(),
            ));
        }
    }
}

/// One request, with who sent it.
struct Req<'a> {
    service: &'a str,
    from: &'a Jid,
    requester: BareJid,
    set: bool,
}

impl Req<'_> {
    fn may_create(&self, server: &Server) -> bool {
        match server.config.pubsub.create {
            RoomCreation::Everyone => true,
            RoomCreation::Local => server.serves(self.from.domain().as_str()),
            RoomCreation::Admins => server.config.is_admin(self.requester.as_str()),
        }
    }

    fn owns(&self, server: &Server, config: &NodeConfig) -> bool {
        is_owner(server, config, &self.requester)
    }

    fn may_see(&self, server: &Server, config: &NodeConfig) -> Result<(), StanzaError> {
        if is_owner(server, config, &self.requester) {
            return Ok(());
        }
        may_see(config, self.service, self.requester.as_str(), None)
    }

    /// A new node's configuration: open, as many items as the server keeps, owned by the
    /// requester.
    fn new_config(&self) -> NodeConfig {
        NodeConfig {
            access_model: AccessModel::Open,
            max_items: MaxItems::Max,
            owners: vec![self.requester.to_string()],
            ..NodeConfig::default()
        }
    }

    /// The `jid` of a subscribe or unsubscribe, which must be the requester's (bare or
    /// full), §6.1.3.1.
    fn own_jid(&self, verb: &Element) -> Result<String, StanzaError> {
        let jid = verb
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(|| pubsub_error(Cond::BadRequest, "jid-required"))?;
        if jid.to_bare() != self.requester {
            return Err(pubsub_error(Cond::BadRequest, "invalid-jid"));
        }
        Ok(jid.to_string())
    }
}

fn is_owner(server: &Server, config: &NodeConfig, who: &BareJid) -> bool {
    config.owners.iter().any(|o| o == who.as_str()) || server.config.is_admin(who.as_str())
}

fn visible(server: &Server, service: &str, config: &NodeConfig, who: &BareJid) -> bool {
    is_owner(server, config, who) || may_see(config, service, who.as_str(), None).is_ok()
}

/// Apply a client's configuration form: the server's private fields are dropped, and the
/// access models a service cannot judge (no roster) are refused.
fn apply_client_form(config: &mut NodeConfig, form: &Form) -> Result<(), StanzaError> {
    if form.form_type.as_deref().is_some_and(|t| {
        t != crate::pubsub::NS_PUBSUB_NODE_CONFIG && t != NS_PUBSUB_PUBLISH_OPTIONS
    }) {
        return Err(StanzaError::new(Cond::BadRequest));
    }
    let form = Form {
        form_type: form.form_type.clone(),
        fields: form
            .fields
            .iter()
            .filter(|(var, _)| !is_private_field(var))
            .cloned()
            .collect(),
    };
    let mut next = config.clone();
    next.apply(&form)?;
    match next.access_model {
        AccessModel::Open | AccessModel::Whitelist => {}
        AccessModel::Presence => return Err(unsupported("access-presence")),
        AccessModel::Roster => return Err(unsupported("access-roster")),
    }
    *config = next;
    Ok(())
}

fn unsupported(feature: &str) -> StanzaError {
    StanzaError::new(Cond::FeatureNotImplemented)
        .with_app(Element::new("unsupported", NS_PUBSUB_ERRORS).with_attr("feature", feature))
}

fn internal(e: franca_store::StoreError) -> StanzaError {
    tracing::error!("pubsub service storage error: {e}");
    StanzaError::new(Cond::InternalServerError)
}

/// The `node` attribute: present and bounded.
fn node_name(verb: &Element) -> Result<&str, StanzaError> {
    match verb.attr("node") {
        None | Some("") => Err(pubsub_error(Cond::BadRequest, "nodeid-required")),
        Some(n) if n.len() > MAX_NAME_BYTES => Err(StanzaError::new(Cond::NotAcceptable)),
        Some(n) => Ok(n),
    }
}

/// The ids of the `<item/>` children, at most [`MAX_IDS`].
fn item_ids(verb: &Element) -> Result<Vec<String>, StanzaError> {
    let ids: Vec<String> = verb
        .elements()
        .filter(|e| e.is("item", NS_PUBSUB))
        .filter_map(|e| e.attr("id"))
        .take(MAX_IDS + 1)
        .map(str::to_owned)
        .collect();
    if ids.len() > MAX_IDS || ids.iter().any(|i| i.len() > MAX_NAME_BYTES) {
        return Err(StanzaError::new(Cond::NotAcceptable));
    }
    Ok(ids)
}

/// The `<publish-options/>` form, if any (XEP-0060 §7.1.5).
fn options_form(pubsub: &Element) -> Result<Option<Form>, StanzaError> {
    let Some(x) = pubsub
        .child("publish-options", NS_PUBSUB)
        .and_then(|p| p.child("x", NS_DATA_FORMS))
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

fn identity(kind: &str, name: Option<&str>) -> Element {
    let mut id = Element::new("identity", NS_DISCO_INFO)
        .with_attr("category", "pubsub")
        .with_attr("type", kind);
    if let Some(n) = name {
        id.set_attr("name", n);
    }
    id
}

fn aff(jid: &str, affiliation: &str) -> Element {
    Element::new("affiliation", NS_PUBSUB_OWNER)
        .with_attr("jid", jid)
        .with_attr("affiliation", affiliation)
}

fn iq_result(req: &Element, payload: Option<Element>) -> Element {
    let mut r = Element::new("iq", NS_CLIENT).with_attr("type", "result");
    if let Some(id) = req.attr("id") {
        r.set_attr("id", id);
    }
    if let Some(to) = req.attr("to") {
        r.set_attr("from", to);
    }
    if let Some(from) = req.attr("from") {
        r.set_attr("to", from);
    }
    if let Some(p) = payload {
        r.push(p);
    }
    r
}

#[async_trait::async_trait]
impl Module for PubsubService {
    fn name(&self) -> &'static str {
        "pubsub-service"
    }

    fn services(&self, _config: &franca_core::Config) -> Vec<HostedService> {
        let mut list: Vec<HostedService> = self
            .domains
            .iter()
            .map(|domain| HostedService {
                domain: domain.clone(),
                name: SERVICE_NAME,
            })
            .collect();
        list.sort_by(|a, b| a.domain.cmp(&b.domain));
        list
    }

    async fn service_stanza(&self, server: &Arc<Server>, to: Jid, stanza: Element) {
        if self.domains.contains(to.domain().as_str()) {
            self.handle(server, to, stanza).await;
        }
    }
}

#[cfg(test)]
#[path = "pubsub_service_tests.rs"]
mod tests;
