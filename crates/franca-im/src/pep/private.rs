//! XEP-0049 private XML storage, and XEP-0048 bookmarks mapped onto XEP-0402.
//!
//! Each stored element is the one item (id `current`) of the account's node
//! `private:<namespace>|<name>`, whitelisted and never published (see [`super`]).
//!
//! `storage:bookmarks` (XEP-0048) is also kept in step with the XEP-0402 node
//! `urn:xmpp:bookmarks:1` (XEP-0402 §5.2): a private-XML write publishes one item per
//! `<conference/>` (id = room JID) and retracts the rooms no longer listed; a private-XML read,
//! when the XEP-0402 node exists, lists its conferences (plus the `<url/>` bookmarks of the
//! stored copy, which XEP-0402 has no place for). So a client of either kind sees the other's
//! bookmarks.

use super::{NS_BOOKMARKS2, NS_PRIVATE, PRIVATE_PREFIX, Pep};
use crate::pubsub::NS_PUBSUB;
use crate::pubsub::config::{AccessModel, MaxItems, NodeConfig};
use crate::pubsub::form::Form;
use franca_core::{IqRequest, IqResult, Server};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_xml::Element;
use jid::BareJid;
use std::collections::HashSet;
use std::sync::Arc;

/// XEP-0048.
pub const NS_BOOKMARKS: &str = "storage:bookmarks";
/// Elements set in one request, at most.
const MAX_ELEMENTS: usize = 16;

fn node_for(el: &Element) -> String {
    format!("{PRIVATE_PREFIX}{}|{}", el.ns, el.name)
}

fn private_config() -> NodeConfig {
    NodeConfig {
        access_model: AccessModel::Whitelist,
        max_items: MaxItems::Count(1),
        ..NodeConfig::default()
    }
}

/// The XEP-0402 node's configuration (§3: whitelist, persistent, many items).
fn bookmarks_options() -> Form {
    Form {
        form_type: None,
        fields: vec![
            ("pubsub#access_model".into(), vec!["whitelist".into()]),
            ("pubsub#persist_items".into(), vec!["true".into()]),
            ("pubsub#max_items".into(), vec!["max".into()]),
        ],
    }
}

/// XEP-0049 §2.1 forbids these namespaces (and a namespace is required).
fn refused_ns(ns: &str) -> bool {
    ns.is_empty() || ns == NS_PRIVATE || ns == franca_proto::ns::NS_CLIENT
}

pub(super) async fn handle(
    pep: &Pep,
    server: &Arc<Server>,
    req: &IqRequest<'_>,
    query: &Element,
) -> IqResult {
    if !req.from_self() {
        return Err(StanzaError::new(Cond::Forbidden));
    }
    let owner = req.to.to_bare();
    let elements: Vec<&Element> = query.elements().collect();
    if elements.is_empty() || elements.len() > MAX_ELEMENTS {
        return Err(StanzaError::new(Cond::NotAcceptable));
    }
    if elements.iter().any(|e| refused_ns(&e.ns)) {
        return Err(StanzaError::new(Cond::NotAcceptable));
    }
    let svc = Pep::service(server, owner.as_str());
    if !req.is_set() {
        // §2.2: one element names what to get.
        let [wanted] = elements.as_slice() else {
            return Err(StanzaError::new(Cond::NotAcceptable));
        };
        let node = node_for(wanted);
        let stored = if svc.node(&node).await?.is_some() {
            svc.items(&node, &[], 1)
                .await?
                .pop()
                .and_then(|item| item.first_element().cloned())
        } else {
            None
        };
        let mut el =
            stored.unwrap_or_else(|| Element::new(wanted.name.as_str(), wanted.ns.as_str()));
        if wanted.is("storage", NS_BOOKMARKS) {
            el = bookmarks_from_pep(server, &owner, el).await?;
        }
        return Ok(Some(Element::new("query", NS_PRIVATE).with_child(el)));
    }
    for el in elements {
        let node = node_for(el);
        if svc.node(&node).await?.is_none() {
            svc.create(&node, &private_config()).await?;
        }
        let item = Element::new("item", NS_PUBSUB)
            .with_attr("id", "current")
            .with_child(el.clone());
        svc.publish(&node, &item, None, super::now_us()).await?;
        if el.is("storage", NS_BOOKMARKS) {
            bookmarks_to_pep(pep, server, &owner, el).await?;
        }
    }
    Ok(None)
}

/// XEP-0048 `<storage/>` as seen through the XEP-0402 node, if there is one.
async fn bookmarks_from_pep(
    server: &Arc<Server>,
    owner: &BareJid,
    stored: Element,
) -> Result<Element, StanzaError> {
    let svc = Pep::service(server, owner.as_str());
    if svc.node(NS_BOOKMARKS2).await?.is_none() {
        return Ok(stored);
    }
    let mut out = Element::new("storage", NS_BOOKMARKS);
    for item in svc
        .items(NS_BOOKMARKS2, &[], server.config.pep.max_items)
        .await?
    {
        let (Some(jid), Some(c)) = (item.attr("id"), item.child("conference", NS_BOOKMARKS2))
        else {
            continue;
        };
        let mut conf = Element::new("conference", NS_BOOKMARKS).with_attr("jid", jid);
        if let Some(name) = c.attr("name") {
            conf.set_attr("name", name);
        }
        if let Some(a) = c.attr("autojoin") {
            conf.set_attr("autojoin", a);
        }
        for (child, _) in [("nick", ()), ("password", ())] {
            if let Some(e) = c.child(child, NS_BOOKMARKS2) {
                conf.push(Element::new(child, NS_BOOKMARKS).with_text(e.text()));
            }
        }
        out.push(conf);
    }
    for url in stored.elements().filter(|e| e.is("url", NS_BOOKMARKS)) {
        out.push(url.clone());
    }
    Ok(out)
}

/// Publish the conferences of a XEP-0048 `<storage/>` to the XEP-0402 node and retract the
/// ones it no longer lists.
async fn bookmarks_to_pep(
    pep: &Pep,
    server: &Arc<Server>,
    owner: &BareJid,
    storage: &Element,
) -> Result<(), StanzaError> {
    let options = bookmarks_options();
    let mut listed = HashSet::new();
    for c in storage
        .elements()
        .filter(|e| e.is("conference", NS_BOOKMARKS))
    {
        let Some(jid) = c.attr("jid").and_then(|j| BareJid::new(j).ok()) else {
            continue;
        };
        let mut conf = Element::new("conference", NS_BOOKMARKS2);
        if let Some(name) = c.attr("name") {
            conf.set_attr("name", name);
        }
        if let Some(a) = c.attr("autojoin") {
            conf.set_attr("autojoin", a);
        }
        for child in ["nick", "password"] {
            if let Some(e) = c.child(child, NS_BOOKMARKS) {
                conf.push(Element::new(child, NS_BOOKMARKS2).with_text(e.text()));
            }
        }
        let item = Element::new("item", NS_PUBSUB)
            .with_attr("id", jid.as_str())
            .with_child(conf);
        // A node a XEP-0402 client configured otherwise keeps its configuration.
        match pep
            .publish(server, owner, NS_BOOKMARKS2, &item, Some(&options))
            .await
        {
            Err(e) if e.condition == Cond::Conflict => {
                pep.publish(server, owner, NS_BOOKMARKS2, &item, None)
                    .await?
            }
            other => other?,
        }
        listed.insert(jid.to_string());
    }
    let svc = Pep::service(server, owner.as_str());
    if svc.node(NS_BOOKMARKS2).await?.is_some() {
        for item in svc
            .items(NS_BOOKMARKS2, &[], server.config.pep.max_items)
            .await?
        {
            if let Some(id) = item.attr("id").filter(|id| !listed.contains(*id)) {
                pep.retract(server, owner, NS_BOOKMARKS2, id, true).await?;
            }
        }
    }
    Ok(())
}
