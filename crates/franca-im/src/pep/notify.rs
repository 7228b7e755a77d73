//! Who gets a PEP notification (XEP-0163 §4.3): available resources of the owner and of
//! contacts the owner's roster lets see the node (for the default `presence` model, those with
//! a `from` or `both` subscription), and only those whose entity capabilities include
//! `<node>+notify`. And §6.2: when a resource with such capabilities comes online, the last
//! item of each node it may see, from its own account and every account it is subscribed to.

use super::caps::{Caps, Features};
use super::is_private;
use crate::pubsub::access::may_see;
use crate::pubsub::config::NodeConfig;
use crate::pubsub::event;
use crate::pubsub::service::Service;
use franca_core::Server;
use franca_store::Subscription;
use franca_xml::Element;
use jid::{BareJid, FullJid};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Ids of notification messages: unique per server run.
pub struct Ids {
    hasher: RandomState,
    next: AtomicU64,
}

impl Default for Ids {
    fn default() -> Ids {
        Ids::new()
    }
}

impl Ids {
    pub fn new() -> Ids {
        Ids {
            hasher: RandomState::new(),
            next: AtomicU64::new(1),
        }
    }
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:x}", self.hasher.hash_one(n))
    }
}

fn wants(features: Option<&Features>, notify: &str) -> bool {
    features.is_some_and(|f| f.contains(notify))
}

/// The resources a notification about `node` of `owner` goes to.
pub async fn recipients(
    server: &Arc<Server>,
    caps: &Caps,
    owner: &BareJid,
    node: &str,
    config: &NodeConfig,
) -> Vec<FullJid> {
    let notify = format!("{node}+notify");
    let mut out: Vec<FullJid> = server
        .sessions
        .available(owner)
        .iter()
        .filter(|s| wants(caps.features(&s.jid).as_deref(), &notify))
        .map(|s| s.jid.clone())
        .collect();
    let roster = match server.store.roster_shared(owner.as_str()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(%owner, "storage error reading roster for PEP: {e}");
            return out;
        }
    };
    for item in &roster.items {
        if !matches!(item.subscription, Subscription::From | Subscription::Both) {
            continue;
        }
        let Ok(contact) = BareJid::new(&item.jid) else {
            continue;
        };
        if may_see(config, owner.as_str(), contact.as_str(), Some(item)).is_err() {
            continue;
        }
        for s in server.sessions.available(&contact) {
            if wants(caps.features(&s.jid).as_deref(), &notify) {
                out.push(s.jid.clone());
            }
        }
    }
    out
}

/// Send `event` about `node` of `owner` to every recipient.
pub async fn broadcast(
    server: &Arc<Server>,
    caps: &Caps,
    ids: &Ids,
    owner: &BareJid,
    node: &str,
    config: &NodeConfig,
    event: Element,
) {
    let to = recipients(server, caps, owner, node, config).await;
    send(server, ids, owner, &to, event).await;
}

pub async fn send(
    server: &Arc<Server>,
    ids: &Ids,
    owner: &BareJid,
    to: &[FullJid],
    event: Element,
) {
    for jid in to {
        let m = event::message(owner.as_str(), jid.as_str(), &ids.next(), event.clone());
        server.route(m).await;
    }
}

/// XEP-0163 §6.2: `jid` just came online with `features`: send it the last item of each node
/// it may see and asked for (+notify), of its own account and of the accounts whose presence
/// it receives.
pub async fn last_items(
    server: &Arc<Server>,
    ids: &Ids,
    jid: &FullJid,
    features: &Features,
    max_nodes: u32,
) {
    if !features.iter().any(|f| f.ends_with("+notify")) {
        return;
    }
    let me = jid.to_bare();
    let mut owners = vec![me.clone()];
    match server.store.roster_shared(me.as_str()).await {
        Ok(roster) => owners.extend(
            roster
                .items
                .iter()
                .filter(|i| matches!(i.subscription, Subscription::To | Subscription::Both))
                .filter_map(|i| BareJid::new(&i.jid).ok())
                .filter(|j| server.serves(j.domain().as_str())),
        ),
        Err(e) => tracing::error!(user = %me, "storage error reading roster for PEP: {e}"),
    }
    for owner in owners {
        let svc = Service {
            store: &*server.store,
            owner: owner.as_str(),
            max_nodes,
            max_items: 1,
        };
        let Ok(nodes) = svc.nodes().await else {
            continue;
        };
        let wanted: Vec<_> = nodes
            .into_iter()
            .filter(|n| !is_private(&n.name) && features.contains(&format!("{}+notify", n.name)))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let item = if owner == me {
            None
        } else {
            match server.store.roster_item(owner.as_str(), me.as_str()).await {
                Ok(item) => item,
                Err(_) => continue,
            }
        };
        for node in wanted {
            if may_see(&node.config, owner.as_str(), me.as_str(), item.as_ref()).is_err() {
                continue;
            }
            if let Ok(items) = svc.items(&node.name, &[], 1).await
                && let Some(last) = items.last()
            {
                let ev = event::published(&node.name, last);
                send(server, ids, &owner, std::slice::from_ref(jid), ev).await;
            }
        }
    }
}
