//! XEP-0160 Best Practices for Handling Offline Messages: a `normal` or `chat` message for an
//! account with no resource that can take it is stored (up to `offline.max_per_user`), and
//! delivered with a XEP-0203 `<delay/>` when a resource of the account sends initial presence
//! with a non-negative priority (RFC 6121 §8.5.2.1.1). Stored messages are deleted
//! only once they are queued to that resource.
//!
//! XEP-0334 hints are honoured: `<no-store/>` and `<no-permanent-store/>` are not stored (the
//! sender gets `service-unavailable`, as without offline storage); `<store/>` stores what would
//! otherwise not be. A message with nothing worth keeping (only chat states, a thread or hints)
//! is dropped silently, like ejabberd does: bouncing a typing notification helps nobody.
//!
//! Most logins find no stored message, so the accounts known to have none are remembered
//! (`KnownEmpty`) and their logins skip the read.

use franca_core::session::OUTBOUND_QUEUE;
use franca_core::util::{now_us, xep0082_datetime};
use franca_core::{Flow, Module, Server, Session, SessionEvent};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_CLIENT, NS_DELAY, NS_HINTS, NS_OFFLINE};
use franca_store::StoreError;
use franca_xml::{Element, Limits};
use jid::BareJid;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock, Weak};

pub struct Offline;

/// Most accounts [`KnownEmpty`] remembers; past it the set starts again empty, which costs a
/// read at the next login of each, nothing else.
const MAX_KNOWN_EMPTY: usize = 100_000;

/// Accounts whose offline storage is known to be empty. This holds because only this module
/// stores offline messages (the `franca user` CLI never does, and removing an account empties
/// its storage), and it forgets an account before storing a message for it.
#[derive(Default)]
struct KnownEmpty {
    inner: Mutex<KnownEmptyInner>,
}

#[derive(Default)]
struct KnownEmptyInner {
    users: HashSet<String>,
    /// Counts messages about to be stored. A login that read storage marks its account empty
    /// only if none was stored meanwhile: that read may have missed it.
    stores: u64,
}

impl KnownEmpty {
    fn lock(&self) -> std::sync::MutexGuard<'_, KnownEmptyInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn contains(&self, user: &str) -> bool {
        self.lock().users.contains(user)
    }
    /// Before storing a message for `user`.
    fn storing(&self, user: &str) {
        let mut k = self.lock();
        k.users.remove(user);
        k.stores += 1;
    }
    /// Read before reading storage, for [`KnownEmpty::mark`].
    fn stores(&self) -> u64 {
        self.lock().stores
    }
    /// `user`'s storage was empty (or emptied) as of a read that began when
    /// [`KnownEmpty::stores`] returned `stores`.
    fn mark(&self, user: &str, stores: u64) {
        let mut k = self.lock();
        if k.stores != stores {
            return;
        }
        if k.users.len() >= MAX_KNOWN_EMPTY {
            k.users.clear();
        }
        k.users.insert(user.to_owned());
    }
    fn forget(&self, user: &str) {
        self.lock().users.remove(user);
    }
}

/// One [`KnownEmpty`] per [`Server`], keyed by its address, as the blocking module keeps its
/// cache (the module is a unit struct).
static KNOWN_EMPTY: RwLock<Vec<(Weak<Server>, Arc<KnownEmpty>)>> = RwLock::new(Vec::new());

fn known_empty(server: &Arc<Server>) -> Arc<KnownEmpty> {
    let ptr = Arc::as_ptr(server);
    {
        let all = KNOWN_EMPTY.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, k)) = all.iter().find(|(w, _)| w.as_ptr() == ptr) {
            return k.clone();
        }
    }
    let mut all = KNOWN_EMPTY.write().unwrap_or_else(|e| e.into_inner());
    if let Some((_, k)) = all.iter().find(|(w, _)| w.as_ptr() == ptr) {
        return k.clone();
    }
    all.retain(|(w, _)| w.strong_count() > 0);
    let k = Arc::new(KnownEmpty::default());
    all.push((Arc::downgrade(server), k.clone()));
    k
}

const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

/// Most stored messages queued to a resource at once: half its outbound queue, so that a large
/// backlog never makes the session look too slow (the rest follow at the next login).
const MAX_PER_DELIVERY: usize = OUTBOUND_QUEUE / 2;

/// Parse one element stored as XML by this server (offline messages, vCards). The store is
/// trusted, but a damaged row must not take the server down: `None` when it does not parse.
pub(crate) fn parse_stored(xml: &str) -> Option<Element> {
    let limits = Limits {
        max_stanza_bytes: xml.len().saturating_add(1024),
        max_depth: 1024,
        max_attrs: 1024,
    };
    franca_xml::read_document(xml.as_bytes(), limits, Some(NS_CLIENT))
        .ok()
        .flatten()
}

/// Whether `message` carries anything a user would want later.
fn worth_storing(message: &Element) -> bool {
    message
        .elements()
        .any(|c| c.ns != NS_CHATSTATES && c.ns != NS_HINTS && !c.is("thread", NS_CLIENT))
}

enum Decision {
    Store,
    /// Let the router bounce it (`service-unavailable`).
    Bounce,
    /// Drop silently.
    Drop,
}

fn decide(message: &Element) -> Decision {
    if message.name != "message" {
        return Decision::Bounce;
    }
    let hint = |name| message.has_child(name, NS_HINTS);
    if hint("no-store") || hint("no-permanent-store") {
        return Decision::Bounce;
    }
    let kind = message.attr("type").unwrap_or("normal");
    if kind == "error" {
        return Decision::Bounce;
    }
    if hint("store") {
        return Decision::Store;
    }
    if matches!(kind, "groupchat" | "headline") {
        return Decision::Bounce;
    }
    if worth_storing(message) {
        Decision::Store
    } else {
        Decision::Drop
    }
}

/// Queue the stored messages to `session`, oldest first, and delete those that were queued.
async fn deliver(server: &Arc<Server>, session: &Arc<Session>) {
    let user = session.bare();
    let known = known_empty(server);
    if known.contains(user.as_str()) {
        return;
    }
    let stores = known.stores();
    let stored = match server.store.offline(user.as_str()).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(%user, "storage error reading offline messages: {e}");
            return;
        }
    };
    let total = stored.len();
    let domain = user.domain().as_str();
    let mut done = Vec::new();
    for m in stored.into_iter().take(MAX_PER_DELIVERY) {
        let Some(mut message) = parse_stored(&m.xml) else {
            tracing::error!(%user, id = m.id, "dropping unreadable offline message");
            done.push(m.id);
            continue;
        };
        message.push(
            Element::new("delay", NS_DELAY)
                .with_attr("from", domain)
                .with_attr("stamp", xep0082_datetime(m.stamp_us)),
        );
        if !session.send(&message) {
            break;
        }
        done.push(m.id);
    }
    if done.is_empty() {
        if total == 0 {
            known.mark(user.as_str(), stores);
        }
        return;
    }
    match server.store.delete_offline(user.as_str(), &done).await {
        Ok(()) if done.len() == total => known.mark(user.as_str(), stores),
        Ok(()) => {}
        // They were delivered; the worst outcome is that they are delivered again.
        Err(e) => tracing::error!(%user, "storage error deleting offline messages: {e}"),
    }
}

#[async_trait::async_trait]
impl Module for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[NS_OFFLINE]
    }

    async fn undeliverable(&self, server: &Arc<Server>, to: &BareJid, stanza: &Element) -> Flow {
        match decide(stanza) {
            Decision::Bounce => return Flow::Continue,
            Decision::Drop => return Flow::Handled,
            Decision::Store => {}
        }
        let quota = server.config.offline.max_per_user;
        let xml = stanza.to_xml();
        known_empty(server).storing(to.as_str());
        match server
            .store
            .push_offline(to.as_str(), now_us(), &xml, quota)
            .await
        {
            Ok(()) => {}
            Err(StoreError::QuotaExceeded) => {
                let e = StanzaError::new(Cond::ResourceConstraint)
                    .with_text("the recipient's offline storage is full");
                server.reply_error(stanza, e).await;
            }
            Err(e) => {
                tracing::error!(user = %to, "storage error storing offline message: {e}");
                server
                    .reply_error(stanza, StanzaError::new(Cond::InternalServerError))
                    .await;
            }
        }
        Flow::Handled
    }

    async fn session_event(&self, server: &Arc<Server>, event: &SessionEvent) {
        let SessionEvent::Available(session) = event else {
            return;
        };
        let priority = session.presence().priority;
        if priority >= 0 {
            deliver(server, session).await;
        }
    }

    async fn user_removed(&self, server: &Arc<Server>, user: &BareJid) {
        // Not needed for correctness (a new account under this JID has no messages either);
        // it keeps the set to accounts that exist.
        known_empty(server).forget(user.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server, server_with, xml};
    use franca_core::Config;

    async fn stamps(server: &Server, user: &str) -> Vec<String> {
        server
            .store
            .offline(user)
            .await
            .expect("offline")
            .iter()
            .map(|m| xep0082_datetime(m.stamp_us))
            .collect()
    }

    #[tokio::test]
    async fn xep0160_messages_are_stored_and_delivered_with_xep0203_delay() {
        let server = server(vec![Arc::new(Offline)]).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<message to='juliet@localhost' type='chat' id='o1'><body>Wherefore?</body></message>")
            .await;
        romeo
            .send("<message to='juliet@localhost/balcony' id='o2'><subject>s</subject><body>2</body></message>")
            .await;
        romeo.silent();
        let stamps = stamps(&server, "juliet@localhost").await;
        assert_eq!(stamps.len(), 2);

        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet.expect(&format!(
            "<message from='romeo@localhost/orchard' to='juliet@localhost' type='chat' id='o1'>
               <body>Wherefore?</body>
               <delay xmlns='urn:xmpp:delay' from='localhost' stamp='{}'/>
             </message>",
            stamps[0]
        ));
        juliet.expect(&format!(
            "<message from='romeo@localhost/orchard' to='juliet@localhost' id='o2'>
               <subject>s</subject><body>2</body>
               <delay xmlns='urn:xmpp:delay' from='localhost' stamp='{}'/>
             </message>",
            stamps[1]
        ));
        juliet.silent();
        assert_eq!(
            server
                .store
                .offline_count("juliet@localhost")
                .await
                .expect("count"),
            0
        );
    }

    #[tokio::test]
    async fn xep0160_a_login_that_found_nothing_does_not_hide_later_messages() {
        let server = server(vec![Arc::new(Offline)]).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        // Found nothing: remembered as empty, so the next login skips the read...
        let juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        assert!(known_empty(&server).contains("juliet@localhost"));
        server.session_closed(&juliet.session).await;
        // ...until a message is stored for her.
        romeo
            .send("<message to='juliet@localhost' type='chat' id='o1'><body>Hie</body></message>")
            .await;
        romeo.silent();
        assert!(!known_empty(&server).contains("juliet@localhost"));
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let message = juliet.recv().expect("the stored message");
        assert_eq!(message.attr("id"), Some("o1"));
        juliet.silent();
        // Everything was delivered: empty again.
        assert!(known_empty(&server).contains("juliet@localhost"));
    }

    #[test]
    fn a_store_during_the_read_keeps_the_account_unknown() {
        let known = KnownEmpty::default();
        let before = known.stores();
        known.storing("juliet@localhost");
        known.mark("juliet@localhost", before);
        assert!(!known.contains("juliet@localhost"));
        known.mark("juliet@localhost", known.stores());
        assert!(known.contains("juliet@localhost"));
    }

    #[tokio::test]
    async fn xep0160_negative_priority_does_not_receive_offline_messages() {
        let server = server(vec![Arc::new(Offline)]).await;
        let romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<message to='juliet@localhost' type='chat' id='o1'><body>1</body></message>")
            .await;
        let mut hidden = Client::online(&server, "juliet@localhost/bot", -1).await;
        hidden.silent();
        // RFC 6121 §8.5.2.1.1: a negative-priority resource does not get bare-JID messages,
        // so new ones are stored too.
        romeo
            .send("<message to='juliet@localhost' type='chat' id='o2'><body>2</body></message>")
            .await;
        hidden.silent();
        assert_eq!(
            server
                .store
                .offline_count("juliet@localhost")
                .await
                .expect("count"),
            2
        );
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 1).await;
        for id in ["o1", "o2"] {
            assert_eq!(
                juliet
                    .recv()
                    .and_then(|m| m.attr("id").map(str::to_owned))
                    .as_deref(),
                Some(id)
            );
        }
    }

    #[tokio::test]
    async fn xep0160_full_storage_bounces_resource_constraint() {
        let mut config = Config::default();
        config.offline.max_per_user = 1;
        let server = server_with(config, vec![Arc::new(Offline)]).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<message to='juliet@localhost' type='chat' id='q1'><body>1</body></message>")
            .await;
        romeo.silent();
        romeo
            .send("<message to='juliet@localhost' type='chat' id='q2'><body>2</body></message>")
            .await;
        romeo.expect(
            "<message from='juliet@localhost' to='romeo@localhost/orchard' type='error' id='q2'>
               <body>2</body>
               <error type='wait'>
                 <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>the recipient's offline storage is full</text>
               </error>
             </message>",
        );
    }

    #[tokio::test]
    async fn xep0334_hints_and_chat_states_to_offline_users() {
        let server = server(vec![Arc::new(Offline)]).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        // Only a chat state: dropped, no bounce.
        romeo
            .send("<message to='juliet@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
            .await;
        romeo.silent();
        // <no-store/>: not stored, so it bounces as if there were no offline storage.
        romeo
            .send("<message to='juliet@localhost' type='chat' id='h1'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>")
            .await;
        let bounce = romeo.recv().expect("bounce");
        assert_eq!(bounce.attr("type"), Some("error"));
        assert_eq!(
            server
                .store
                .offline_count("juliet@localhost")
                .await
                .expect("count"),
            0
        );
        // <store/> keeps what would otherwise be dropped.
        romeo
            .send("<message to='juliet@localhost' type='chat'><gone xmlns='http://jabber.org/protocol/chatstates'/><store xmlns='urn:xmpp:hints'/></message>")
            .await;
        romeo.silent();
        assert_eq!(
            server
                .store
                .offline_count("juliet@localhost")
                .await
                .expect("count"),
            1
        );
    }

    #[test]
    fn xep0160_which_messages_are_stored() {
        let stored = |s: &str| matches!(decide(&xml(s)), Decision::Store);
        assert!(stored("<message><body>normal</body></message>"));
        assert!(stored("<message type='chat'><body>chat</body></message>"));
        assert!(stored(
            "<message type='chat'><received xmlns='urn:xmpp:receipts' id='1'/></message>"
        ));
        assert!(stored(
            "<message type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"
        ));
        assert!(!stored(
            "<message type='headline'><body>news</body></message>"
        ));
        assert!(!stored(
            "<message type='groupchat'><body>room</body></message>"
        ));
        assert!(!stored("<message type='error'><body>err</body></message>"));
        assert!(!stored(
            "<message type='chat'><thread>t</thread><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ));
        assert!(!stored(
            "<message type='chat'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>"
        ));
        assert!(stored(
            "<message type='headline'><body>x</body><store xmlns='urn:xmpp:hints'/></message>"
        ));
    }

    #[tokio::test]
    async fn xep0160_unreadable_rows_are_dropped_and_undelivered_ones_kept() {
        let server = server(vec![Arc::new(Offline)]).await;
        server
            .store
            .push_offline("juliet@localhost", 1_000_000, "<message><body>broken", 10)
            .await
            .expect("push");
        server
            .store
            .push_offline(
                "juliet@localhost",
                2_000_000,
                "<message xmlns='jabber:client'><body>ok</body></message>",
                10,
            )
            .await
            .expect("push");
        // A session that cannot take anything (its reader is gone) keeps everything queued.
        let bound = server
            .bind(jid::FullJid::new("juliet@localhost/gone").expect("jid"))
            .await;
        drop(bound.rx);
        bound.session.presence().available = true;
        server
            .emit(&SessionEvent::Available(bound.session.clone()))
            .await;
        assert_eq!(
            server
                .store
                .offline_count("juliet@localhost")
                .await
                .expect("count"),
            1
        );

        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet.expect(
            "<message><body>ok</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp='1970-01-01T00:00:02Z'/></message>",
        );
        juliet.silent();
        assert_eq!(
            server
                .store
                .offline_count("juliet@localhost")
                .await
                .expect("count"),
            0
        );
    }
}
