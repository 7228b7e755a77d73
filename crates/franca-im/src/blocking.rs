//! XEP-0191 Blocking Command: the account's blocklist (get, block, unblock, unblock-all) with
//! pushes to the resources that asked for the roster, and enforcement on both directions: a blocked
//! entity's stanzas never reach the user ("User Blocks Contact": presence dropped, messages and IQ
//! requests answered `service-unavailable`, as if the user were offline), and the user's stanzas to
//! a blocked entity are refused with `not-acceptable` and
//! `<blocked xmlns='urn:xmpp:blocking:errors'/>`.
//!
//! JIDs match as in XEP-0191 "JID Matching" (after XEP-0016): an item `user@domain/resource`
//! matches only that resource, `user@domain` any of its resources, `domain/resource` only that, and
//! `domain` every address at that domain (subdomains are not included, as in Prosody and ejabberd).
//!
//! The blocklist is consulted for every stanza to a local account, so the lists of online
//! accounts are kept in memory (loaded when a resource binds, dropped when the last one closes);
//! only stanzas to offline accounts, which go to storage anyway, read the store.

use franca_core::{Flow, IqRequest, IqResult, IqTarget, Module, Server, Session, SessionEvent};
use franca_proto::errors::{ErrorType, StanzaError, StanzaErrorCondition as Cond, error_reply};
use franca_proto::ns::{NS_BLOCKING, NS_BLOCKING_ERRORS, NS_CLIENT};
use franca_store::Subscription;
use franca_xml::Element;
use jid::{BareJid, Jid};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

/// Most JIDs one account may block: the list is held in memory while the user is online.
pub const MAX_BLOCKED: usize = 10_000;

pub struct Blocking;

/// A blocklist: normalised JID strings, as stored.
type List = Arc<HashSet<String>>;

/// Most accounts remembered as having an empty blocklist (cleared when full).
const MAX_KNOWN_EMPTY: usize = 100_000;

/// In-memory blocklists of the accounts that have a bound resource, and the accounts known to
/// block nobody.
///
/// Most accounts never block anyone, yet every login and every stanza to an offline account
/// asked storage for the list. An account is remembered as empty only by a load that no
/// `block` overtook: `block` bumps `generation` and forgets the account under the same lock
/// that a load takes to remember it. Only this module writes blocklists (the CLI never does),
/// so memory cannot go stale.
#[derive(Default)]
struct Cache {
    lists: RwLock<HashMap<BareJid, List>>,
    empty: Mutex<KnownEmpty>,
}

#[derive(Default)]
struct KnownEmpty {
    users: HashSet<BareJid>,
    /// Bumped by every `block`.
    generation: u64,
}

impl Cache {
    fn get(&self, user: &BareJid) -> Option<List> {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        lists.get(user).cloned()
    }
    fn put(&self, user: &BareJid, list: List) {
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        lists.insert(user.clone(), list);
    }
    fn put_if_absent(&self, user: &BareJid, list: List) {
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        lists.entry(user.clone()).or_insert(list);
    }
    fn remove(&self, user: &BareJid) {
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        lists.remove(user);
    }
    fn known_empty(&self) -> MutexGuard<'_, KnownEmpty> {
        self.empty.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Before storing a block: the account is no longer known to be empty, and loads that
    /// started earlier must not record it as empty.
    fn blocking(&self, user: &BareJid) {
        let mut e = self.known_empty();
        e.generation += 1;
        e.users.remove(user);
    }
    /// Load the list from storage, remembering an empty one if no block overtook the load.
    async fn load(&self, server: &Server, user: &BareJid) -> franca_store::Result<List> {
        let generation = {
            let e = self.known_empty();
            if e.users.contains(user) {
                return Ok(List::default());
            }
            e.generation
        };
        let items = server.store.blocklist(user.as_str()).await?;
        if items.is_empty() {
            let mut e = self.known_empty();
            if e.generation == generation {
                if e.users.len() >= MAX_KNOWN_EMPTY {
                    e.users.clear();
                }
                e.users.insert(user.clone());
            }
        }
        Ok(Arc::new(items.into_iter().collect()))
    }
}

/// One [`Cache`] per [`Server`]. The module is a unit struct (it is loaded as
/// `blocking::Blocking`), so its state is kept here, keyed by the server's address. The `Weak`
/// keeps that allocation alive, so the address cannot be reused by another server while its
/// entry exists; entries of dropped servers are pruned when a new server registers.
static CACHES: RwLock<Vec<(Weak<Server>, Arc<Cache>)>> = RwLock::new(Vec::new());

fn cache(server: &Arc<Server>) -> Arc<Cache> {
    let ptr = Arc::as_ptr(server);
    {
        let caches = CACHES.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = caches.iter().find(|(w, _)| w.as_ptr() == ptr) {
            return c.clone();
        }
    }
    let mut caches = CACHES.write().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = caches.iter().find(|(w, _)| w.as_ptr() == ptr) {
        return c.clone();
    }
    caches.retain(|(w, _)| w.strong_count() > 0);
    let c = Arc::new(Cache::default());
    caches.push((Arc::downgrade(server), c.clone()));
    c
}

/// The user's blocklist: from memory when the user is online, else from the store.
async fn blocklist(server: &Arc<Server>, user: &BareJid) -> franca_store::Result<List> {
    let cache = cache(server);
    if let Some(list) = cache.get(user) {
        return Ok(list);
    }
    cache.load(server, user).await
}

/// Whether `list` blocks `jid` (XEP-0191 "JID Matching").
fn matches(list: &HashSet<String>, jid: &Jid) -> bool {
    list.contains(jid.as_str())
        || list.contains(jid.to_bare().as_str())
        || list.contains(jid.domain().as_str())
}

/// The user's blocklist when it has entries. A storage error counts as empty (and is logged):
/// letting a stanza through is better than losing it.
async fn nonempty_blocklist(server: &Arc<Server>, user: &BareJid) -> Option<List> {
    match blocklist(server, user).await {
        Ok(list) => (!list.is_empty()).then_some(list),
        Err(e) => {
            tracing::error!(%user, "storage error reading blocklist: {e}");
            None
        }
    }
}

/// Whether `list`, `user`'s blocklist, covers `jid`. The user's own account and the server
/// itself are never blocked, so that replies from the server and between one's own resources
/// always arrive.
fn covers(server: &Server, list: &HashSet<String>, user: &BareJid, jid: &Jid) -> bool {
    let own = jid.domain() == user.domain() && jid.node() == user.node();
    let server_itself = jid.node().is_none() && server.serves(jid.domain().as_str());
    !own && !server_itself && matches(list, jid)
}

/// Whether `user` blocks `jid` (never its own account or the server), for other modules: e.g.
/// presence broadcasts to remote contacts, which do not pass through this module's hooks.
pub async fn blocks(server: &Arc<Server>, user: &BareJid, jid: &Jid) -> bool {
    match nonempty_blocklist(server, user).await {
        Some(list) => covers(server, &list, user, jid),
        None => false,
    }
}

fn blocked_error() -> StanzaError {
    StanzaError::new(Cond::NotAcceptable)
        .with_type(ErrorType::Cancel)
        .with_app(Element::new("blocked", NS_BLOCKING_ERRORS))
}

/// The `<item jid='…'/>` children of a block/unblock request, normalised.
fn items(payload: &Element) -> Result<Vec<Jid>, StanzaError> {
    let mut out: Vec<Jid> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for item in payload.elements() {
        if !item.is("item", NS_BLOCKING) {
            continue;
        }
        if out.len() > MAX_BLOCKED {
            return Err(StanzaError::new(Cond::PolicyViolation)
                .with_text(format!("at most {MAX_BLOCKED} entries can be blocked")));
        }
        let Some(raw) = item.attr("jid") else {
            return Err(StanzaError::new(Cond::BadRequest).with_text("item without a jid"));
        };
        let jid = Jid::new(raw).map_err(|_| StanzaError::new(Cond::JidMalformed))?;
        if seen.insert(jid.as_str().to_owned()) {
            out.push(jid);
        }
    }
    Ok(out)
}

fn item_list(name: &str, jids: &[String]) -> Element {
    let mut el = Element::new(name, NS_BLOCKING);
    for j in jids {
        el.push(Element::new("item", NS_BLOCKING).with_attr("jid", j.clone()));
    }
    el
}

/// XEP-0191 block and unblock "pushes": tell every resource that asked for the roster about the
/// change.
fn push(server: &Server, user: &BareJid, payload: &Element) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    for s in server.sessions.resources(user) {
        if !s.presence().interested {
            continue;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let iq = Element::new("iq", NS_CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("blocking-push-{n}"))
            .with_attr("to", s.jid.as_str())
            .with_child(payload.clone());
        s.send(&iq);
    }
}

/// The addresses that may see the user's presence (RFC 6121: a `from`/`both` subscription, or
/// directed presence) and that the given items cover. With `forget_directed`, directed-presence
/// entries found are removed (they are told `unavailable` now).
async fn presence_audience(
    server: &Arc<Server>,
    user: &BareJid,
    changed: &[Jid],
    want: &[Subscription],
    sessions: &[Arc<Session>],
    forget_directed: bool,
) -> Vec<Jid> {
    let changed_set: HashSet<String> = changed.iter().map(|j| j.as_str().to_owned()).collect();
    // Items naming one resource of a contact: only that resource is told.
    let mut resources: HashMap<BareJid, Vec<&Jid>> = HashMap::new();
    for x in changed.iter().filter(|x| x.resource().is_some()) {
        resources.entry(x.to_bare()).or_default().push(x);
    }
    let mut out: Vec<Jid> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut add = |j: &Jid| {
        if seen.insert(j.as_str().to_owned()) {
            out.push(j.clone());
        }
    };
    let roster = match server.store.roster_shared(user.as_str()).await {
        Ok(roster) => roster,
        Err(e) => {
            tracing::error!(%user, "storage error reading roster: {e}");
            Arc::default()
        }
    };
    for item in roster
        .items
        .iter()
        .filter(|i| want.contains(&i.subscription))
    {
        let Ok(contact) = Jid::new(&item.jid) else {
            continue;
        };
        if matches(&changed_set, &contact) {
            add(&contact);
        } else if let Some(rs) = resources.get(&contact.to_bare()) {
            rs.iter().for_each(|r| add(r));
        }
    }
    if want.contains(&Subscription::From) {
        for s in sessions {
            let mut p = s.presence();
            let hit: Vec<(String, Jid)> = p
                .directed
                .iter()
                .filter_map(|d| Jid::new(d).ok().map(|j| (d.clone(), j)))
                .filter(|(_, j)| matches(&changed_set, j))
                .collect();
            for (raw, jid) in hit {
                if forget_directed {
                    p.directed.remove(&raw);
                }
                add(&jid);
            }
        }
    }
    out
}

/// XEP-0191 "User Blocks Contact": the newly blocked contacts that could see the user's presence
/// get `unavailable` from each available resource, so that the user appears offline to them.
async fn send_unavailable(server: &Arc<Server>, user: &BareJid, blocked: &[Jid]) {
    let sessions = server.sessions.available(user);
    if sessions.is_empty() || blocked.is_empty() {
        return;
    }
    let audience = presence_audience(
        server,
        user,
        blocked,
        &[Subscription::From, Subscription::Both],
        &sessions,
        true,
    )
    .await;
    for to in &audience {
        for s in &sessions {
            let p = Element::new("presence", NS_CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", s.jid.as_str())
                .with_attr("to", to.as_str());
            server.route(p).await;
        }
    }
}

/// XEP-0191 "User Unblocks Contact": the unblocked contacts that may see the user's presence get
/// its current presence again, and the contacts the user is subscribed to are probed, since their
/// presence was dropped while they were blocked.
async fn send_current(server: &Arc<Server>, user: &BareJid, unblocked: &[Jid]) {
    let sessions = server.sessions.available(user);
    if sessions.is_empty() || unblocked.is_empty() {
        return;
    }
    let audience = presence_audience(
        server,
        user,
        unblocked,
        &[Subscription::From, Subscription::Both],
        &sessions,
        false,
    )
    .await;
    for to in &audience {
        for s in &sessions {
            let last = s.presence().last.clone();
            let mut p = last.unwrap_or_else(|| Element::new("presence", NS_CLIENT));
            p.set_attr("from", s.jid.as_str());
            p.set_attr("to", to.as_str());
            server.route(p).await;
        }
    }
    let probed = presence_audience(
        server,
        user,
        unblocked,
        &[Subscription::To, Subscription::Both],
        &[],
        false,
    )
    .await;
    for to in probed {
        let probe = Element::new("presence", NS_CLIENT)
            .with_attr("type", "probe")
            .with_attr("from", user.as_str())
            .with_attr("to", to.to_bare().as_str());
        server.route(probe).await;
    }
}

fn internal(user: &BareJid, e: franca_store::StoreError) -> StanzaError {
    tracing::error!(%user, "storage error updating blocklist: {e}");
    StanzaError::new(Cond::InternalServerError)
}

async fn block(server: &Arc<Server>, user: &BareJid, payload: &Element) -> IqResult {
    let jids = items(payload)?;
    if jids.is_empty() {
        // A block without items is a bad request ("User Blocks Contact").
        return Err(StanzaError::new(Cond::BadRequest).with_text("nothing to block"));
    }
    if jids.iter().any(|j| j.to_bare() == *user) {
        return Err(StanzaError::new(Cond::NotAcceptable).with_text("you cannot block yourself"));
    }
    let current = blocklist(server, user)
        .await
        .map_err(|e| internal(user, e))?;
    let new: Vec<Jid> = jids
        .iter()
        .filter(|j| !current.contains(j.as_str()))
        .cloned()
        .collect();
    if current.len() + new.len() > MAX_BLOCKED {
        return Err(StanzaError::new(Cond::PolicyViolation)
            .with_text(format!("at most {MAX_BLOCKED} entries can be blocked")));
    }
    let strings: Vec<String> = jids.iter().map(|j| j.as_str().to_owned()).collect();
    cache(server).blocking(user);
    server
        .store
        .block(user.as_str(), &strings)
        .await
        .map_err(|e| internal(user, e))?;
    let mut list = (*current).clone();
    list.extend(strings.iter().cloned());
    cache(server).put(user, Arc::new(list));
    push(server, user, &item_list("block", &strings));
    send_unavailable(server, user, &new).await;
    Ok(None)
}

async fn unblock(server: &Arc<Server>, user: &BareJid, payload: &Element) -> IqResult {
    let jids = items(payload)?;
    let current = blocklist(server, user)
        .await
        .map_err(|e| internal(user, e))?;
    let strings: Vec<String> = jids.iter().map(|j| j.as_str().to_owned()).collect();
    server
        .store
        .unblock(user.as_str(), &strings)
        .await
        .map_err(|e| internal(user, e))?;
    let (list, removed): (HashSet<String>, Vec<Jid>) = if jids.is_empty() {
        // An empty unblock unblocks everything ("User Unblocks All Contacts").
        let all = current.iter().filter_map(|s| Jid::new(s).ok()).collect();
        (HashSet::new(), all)
    } else {
        let removed = jids
            .iter()
            .filter(|j| current.contains(j.as_str()))
            .cloned()
            .collect();
        let gone: HashSet<&String> = strings.iter().collect();
        let list = current
            .iter()
            .filter(|s| !gone.contains(s))
            .cloned()
            .collect();
        (list, removed)
    };
    cache(server).put(user, Arc::new(list));
    push(server, user, &item_list("unblock", &strings));
    send_current(server, user, &removed).await;
    Ok(None)
}

/// XEP-0191 "User Blocks Contact": what the user's server does with a stanza from a blocked entity.
async fn refuse_inbound(server: &Arc<Server>, stanza: &Element) {
    let unavailable = || StanzaError::new(Cond::ServiceUnavailable);
    match (stanza.name.as_str(), stanza.attr("type")) {
        // Messages of the kinds a user would read are answered as if nobody were there;
        // groupchat, headline and error messages are dropped.
        ("message", Some("groupchat" | "headline" | "error")) => {}
        ("message", _) => server.reply_error(stanza, unavailable()).await,
        ("iq", Some("get" | "set")) => server.reply_error(stanza, unavailable()).await,
        // Presence (including subscriptions and probes), IQ results and errors: nothing.
        _ => {}
    }
}

#[async_trait::async_trait]
impl Module for Blocking {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Account, NS_BLOCKING)]
    }

    /// XEP-0191 "User Discovers Support" has clients look for the feature on their server; it is on
    /// the account too.
    fn server_features(&self) -> &'static [&'static str] {
        &[NS_BLOCKING]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[NS_BLOCKING]
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let user = req.to.to_bare();
        let Some(payload) = req.payload() else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        match (req.is_set(), payload.name.as_str()) {
            (false, "blocklist") => {
                let list = blocklist(server, &user)
                    .await
                    .map_err(|e| internal(&user, e))?;
                let mut jids: Vec<String> = list.iter().cloned().collect();
                jids.sort();
                Ok(Some(item_list("blocklist", &jids)))
            }
            (true, "block") => block(server, &user, payload).await,
            (true, "unblock") => unblock(server, &user, payload).await,
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }

    async fn outbound(
        &self,
        server: &Arc<Server>,
        session: &Arc<Session>,
        stanza: &mut Element,
    ) -> Flow {
        // Most accounts block nobody: look at the list before parsing any address.
        let user = session.bare();
        let Some(list) = nonempty_blocklist(server, &user).await else {
            return Flow::Continue;
        };
        let Some(to) = stanza.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return Flow::Continue;
        };
        if !covers(server, &list, &user, &to) {
            return Flow::Continue;
        }
        // "User Blocks Contact": not routed; the error goes straight back to the sending resource
        // (routing it would run it through this very filter, from the blocked address).
        if let Some(reply) = error_reply(stanza, &blocked_error()) {
            session.send(&reply);
        }
        Flow::Handled
    }

    async fn inbound(&self, server: &Arc<Server>, to: &BareJid, stanza: &mut Element) -> Flow {
        let from = || stanza.attr("from").and_then(|f| Jid::new(f).ok());
        if let Some(list) = nonempty_blocklist(server, to).await
            && from().is_some_and(|from| covers(server, &list, to, &from))
        {
            refuse_inbound(server, stanza).await;
            return Flow::Handled;
        }
        // The other direction: available presence that a local user broadcasts (the presence
        // module routes it without the outbound hooks) must not reach a contact that user
        // blocked. Unavailable and error presence may pass; they reveal nothing.
        if stanza.name != "presence" || stanza.attr("type").is_some() {
            return Flow::Continue;
        }
        let Some(from) = from() else {
            return Flow::Continue;
        };
        if from.node().is_some() && server.serves(from.domain().as_str()) {
            let recipient = stanza
                .attr("to")
                .and_then(|t| Jid::new(t).ok())
                .unwrap_or_else(|| Jid::from(to.clone()));
            if blocks(server, &from.to_bare(), &recipient).await {
                return Flow::Handled;
            }
        }
        Flow::Continue
    }

    async fn session_event(&self, server: &Arc<Server>, event: &SessionEvent) {
        match event {
            SessionEvent::Bound(s) => {
                let user = s.bare();
                let cache = cache(server);
                if cache.get(&user).is_some() {
                    return;
                }
                match cache.load(server, &user).await {
                    // A block command racing with this load has already stored a newer list.
                    Ok(list) => cache.put_if_absent(&user, list),
                    Err(e) => tracing::error!(%user, "storage error loading blocklist: {e}"),
                }
            }
            SessionEvent::Closed(s) => {
                let user = s.bare();
                if server.sessions.resources(&user).is_empty() {
                    cache(server).remove(&user);
                }
            }
            SessionEvent::Available(_) => {}
        }
    }

    async fn user_removed(&self, server: &Arc<Server>, user: &BareJid) {
        let cache = cache(server);
        cache.remove(user);
        cache.known_empty().users.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server};
    use franca_store::RosterItem;

    async fn blocking_server() -> Arc<Server> {
        server(vec![
            Arc::new(Blocking),
            Arc::new(crate::offline::Offline),
            Arc::new(crate::ping::Ping),
        ])
        .await
    }

    async fn roster(server: &Server, user: &str, contact: &str, subscription: Subscription) {
        let item = RosterItem {
            jid: contact.into(),
            subscription,
            ..RosterItem::default()
        };
        server
            .store
            .put_roster_item(user, &item)
            .await
            .expect("roster item");
    }

    async fn block(juliet: &mut Client, jids: &[&str]) {
        let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
        juliet
            .send(&format!(
                "<iq type='set' id='block1'><block xmlns='urn:xmpp:blocking'>{items}</block></iq>"
            ))
            .await;
        juliet.expect_with_id(
            "push",
            &format!(
                "<iq type='set' id='push' to='{}'><block xmlns='urn:xmpp:blocking'>{items}</block></iq>",
                juliet.session.jid
            ),
        );
        juliet.expect(&format!(
            "<iq type='result' id='block1' from='juliet@localhost' to='{}'/>",
            juliet.session.jid
        ));
    }

    #[tokio::test]
    async fn xep0191_user_retrieves_empty_block_list() {
        let server = blocking_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        juliet
            .send("<iq type='get' id='blocklist1'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
            .await;
        juliet.expect(
            "<iq type='result' id='blocklist1' from='juliet@localhost' to='juliet@localhost/chamber'>
               <blocklist xmlns='urn:xmpp:blocking'/>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0191_user_blocks_contact_with_push_to_interested_resources() {
        let server = blocking_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        let mut balcony = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let mut uninterested = Client::bind(&server, "juliet@localhost/phone").await;
        juliet
            .send(
                "<iq type='set' id='block1'>
                   <block xmlns='urn:xmpp:blocking'>
                     <item jid='Romeo@localhost'/><item jid='iago@shakespeare.lit'/>
                   </block>
                 </iq>",
            )
            .await;
        // Pushed with the JIDs normalised, to the requester too, then the result.
        juliet.expect_with_id(
            "push",
            "<iq type='set' id='push' to='juliet@localhost/chamber'>
               <block xmlns='urn:xmpp:blocking'>
                 <item jid='romeo@localhost'/><item jid='iago@shakespeare.lit'/>
               </block>
             </iq>",
        );
        juliet.expect(
            "<iq type='result' id='block1' from='juliet@localhost' to='juliet@localhost/chamber'/>",
        );
        balcony.expect_with_id(
            "push",
            "<iq type='set' id='push' to='juliet@localhost/balcony'>
               <block xmlns='urn:xmpp:blocking'>
                 <item jid='romeo@localhost'/><item jid='iago@shakespeare.lit'/>
               </block>
             </iq>",
        );
        uninterested.silent();
        juliet
            .send("<iq type='get' id='blocklist1'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
            .await;
        juliet.expect(
            "<iq type='result' id='blocklist1' from='juliet@localhost' to='juliet@localhost/chamber'>
               <blocklist xmlns='urn:xmpp:blocking'>
                 <item jid='iago@shakespeare.lit'/>
                 <item jid='romeo@localhost'/>
               </blocklist>
             </iq>",
        );
        // Kept in storage for the next sessions.
        let mut stored = server
            .store
            .blocklist("juliet@localhost")
            .await
            .expect("blocklist");
        stored.sort();
        assert_eq!(stored, ["iago@shakespeare.lit", "romeo@localhost"]);
    }

    #[tokio::test]
    async fn xep0191_block_without_item_is_bad_request() {
        let server = blocking_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        juliet
            .send("<iq type='set' id='block2'><block xmlns='urn:xmpp:blocking'/></iq>")
            .await;
        juliet.expect(
            "<iq type='error' id='block2' from='juliet@localhost' to='juliet@localhost/chamber'>
               <error type='modify'>
                 <bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>nothing to block</text>
               </error>
             </iq>",
        );
        juliet
            .send("<iq type='set' id='block3'><block xmlns='urn:xmpp:blocking'><item jid='@x'/></block></iq>")
            .await;
        juliet.expect(
            "<iq type='error' id='block3' from='juliet@localhost' to='juliet@localhost/chamber'>
               <error type='modify'><jid-malformed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0191_block_list_belongs_to_its_account_only() {
        let server = blocking_server().await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<iq type='get' id='b1' to='juliet@localhost'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
            .await;
        romeo.expect(
            "<iq type='error' id='b1' from='juliet@localhost' to='romeo@localhost/orchard'>
               <error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0191_blocked_contact_gets_service_unavailable_and_its_presence_is_dropped() {
        let server = blocking_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        block(&mut juliet, &["romeo@localhost"]).await;

        romeo
            .send("<message to='juliet@localhost' type='chat' id='m1'><body>Art thou there?</body></message>")
            .await;
        romeo.expect(
            "<message from='juliet@localhost' to='romeo@localhost/orchard' type='error' id='m1'>
               <body>Art thou there?</body>
               <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </message>",
        );
        romeo
            .send("<iq type='get' id='p1' to='juliet@localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        romeo.expect(
            "<iq from='juliet@localhost' to='romeo@localhost/orchard' type='error' id='p1'>
               <ping xmlns='urn:xmpp:ping'/>
               <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );
        romeo.send("<presence to='juliet@localhost'/>").await;
        romeo
            .send("<presence to='juliet@localhost' type='subscribe'/>")
            .await;
        romeo
            .send("<message to='juliet@localhost/chamber' type='headline'><body>news</body></message>")
            .await;
        romeo.silent();
        juliet.silent();

        // Others still get through.
        let nurse = Client::online(&server, "nurse@localhost/kitchen", 0).await;
        nurse
            .send("<message to='juliet@localhost/chamber' id='m2'><body>Madam!</body></message>")
            .await;
        juliet.expect(
            "<message from='nurse@localhost/kitchen' to='juliet@localhost/chamber' id='m2'>
               <body>Madam!</body>
             </message>",
        );
    }

    #[tokio::test]
    async fn xep0191_user_sending_to_blocked_contact_gets_not_acceptable_blocked() {
        let server = blocking_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        block(&mut juliet, &["romeo@localhost"]).await;
        juliet
            .send("<message to='romeo@localhost/orchard' id='m3'><body>Can you hear me now?</body></message>")
            .await;
        juliet.expect(
            "<message from='romeo@localhost/orchard' to='juliet@localhost/chamber' type='error' id='m3'>
               <body>Can you hear me now?</body>
               <error type='cancel'>
                 <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                 <blocked xmlns='urn:xmpp:blocking:errors'/>
               </error>
             </message>",
        );
        romeo.silent();
    }

    #[tokio::test]
    async fn xep0191_jid_matching_full_bare_and_domain() {
        let server = blocking_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        let mut orchard = Client::online(&server, "romeo@localhost/orchard", 0).await;
        let garden = Client::online(&server, "romeo@localhost/garden", 0).await;
        block(&mut juliet, &["romeo@localhost/orchard", "montague.lit"]).await;

        orchard
            .send("<message to='juliet@localhost' id='o1'><body>1</body></message>")
            .await;
        let bounce = orchard.recv().expect("bounce");
        assert_eq!(bounce.attr("type"), Some("error"));
        juliet.silent();

        garden
            .send("<message to='juliet@localhost' id='g1'><body>2</body></message>")
            .await;
        juliet.expect(
            "<message from='romeo@localhost/garden' to='juliet@localhost' id='g1'><body>2</body></message>",
        );

        // A domain item covers every address there, with or without node or resource.
        for to in [
            "montague.lit",
            "lord@montague.lit",
            "lord@montague.lit/hall",
            "montague.lit/x",
        ] {
            juliet
                .send(&format!(
                    "<message to='{to}' id='d'><body>3</body></message>"
                ))
                .await;
            let e = juliet.recv().expect("refused");
            assert!(
                e.child("error", franca_proto::ns::NS_CLIENT)
                    .is_some_and(|e| e.has_child("blocked", NS_BLOCKING_ERRORS)),
                "{to}: {e:?}"
            );
        }
        // Not a subdomain, and not another server.
        juliet
            .send("<message to='a@conference.montague.lit' id='s'><body>4</body></message>")
            .await;
        let e = juliet.recv().expect("remote-server-not-found");
        assert!(
            e.child("error", franca_proto::ns::NS_CLIENT)
                .is_some_and(|e| !e.has_child("blocked", NS_BLOCKING_ERRORS))
        );
    }

    #[tokio::test]
    async fn xep0191_blocking_sends_unavailable_to_contact_who_sees_presence() {
        let server = blocking_server().await;
        roster(
            &server,
            "juliet@localhost",
            "romeo@localhost",
            Subscription::From,
        )
        .await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        block(&mut juliet, &["romeo@localhost", "nurse@localhost"]).await;
        romeo.expect(
            "<presence type='unavailable' from='juliet@localhost/chamber' to='romeo@localhost'/>",
        );
        romeo.silent();

        // Presence broadcasts (routed by the presence module) no longer reach romeo.
        let broadcast = |to: &str| {
            Element::new("presence", NS_CLIENT)
                .with_attr("from", "juliet@localhost/chamber")
                .with_attr("to", to)
        };
        server.route(broadcast("romeo@localhost")).await;
        romeo.silent();
        let mut benvolio = Client::online(&server, "benvolio@localhost/square", 0).await;
        server.route(broadcast("benvolio@localhost")).await;
        benvolio.expect("<presence from='juliet@localhost/chamber' to='benvolio@localhost'/>");
    }

    #[tokio::test]
    async fn xep0191_blocking_sends_unavailable_to_directed_presence_recipient() {
        let server = blocking_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        juliet
            .session
            .presence()
            .directed
            .insert("nurse@localhost/kitchen".into());
        let mut nurse = Client::online(&server, "nurse@localhost/kitchen", 0).await;
        block(&mut juliet, &["nurse@localhost"]).await;
        nurse.expect(
            "<presence type='unavailable' from='juliet@localhost/chamber' to='nurse@localhost/kitchen'/>",
        );
        nurse.silent();
        assert!(juliet.session.presence().directed.is_empty());
    }

    #[tokio::test]
    async fn xep0191_unblock_contact_pushes_restores_presence_and_delivery() {
        let server = blocking_server().await;
        roster(
            &server,
            "juliet@localhost",
            "romeo@localhost",
            Subscription::Both,
        )
        .await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        juliet.session.presence().last = Some(
            Element::new("presence", NS_CLIENT)
                .with_child(Element::new("show", NS_CLIENT).with_text("away")),
        );
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        block(&mut juliet, &["romeo@localhost"]).await;
        romeo.expect(
            "<presence type='unavailable' from='juliet@localhost/chamber' to='romeo@localhost'/>",
        );

        juliet
            .send("<iq type='set' id='unblock1'><unblock xmlns='urn:xmpp:blocking'><item jid='romeo@localhost'/></unblock></iq>")
            .await;
        juliet.expect_with_id(
            "push",
            "<iq type='set' id='push' to='juliet@localhost/chamber'>
               <unblock xmlns='urn:xmpp:blocking'><item jid='romeo@localhost'/></unblock>
             </iq>",
        );
        juliet.expect(
            "<iq type='result' id='unblock1' from='juliet@localhost' to='juliet@localhost/chamber'/>",
        );
        romeo.expect(
            "<presence from='juliet@localhost/chamber' to='romeo@localhost'><show>away</show></presence>",
        );
        romeo.expect("<presence type='probe' from='juliet@localhost' to='romeo@localhost'/>");

        romeo
            .send("<message to='juliet@localhost/chamber' id='m4'><body>Again</body></message>")
            .await;
        juliet.expect(
            "<message from='romeo@localhost/orchard' to='juliet@localhost/chamber' id='m4'><body>Again</body></message>",
        );
    }

    #[tokio::test]
    async fn xep0191_unblock_all() {
        let server = blocking_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        block(&mut juliet, &["romeo@localhost", "nurse@localhost"]).await;
        juliet
            .send("<iq type='set' id='unblock2'><unblock xmlns='urn:xmpp:blocking'/></iq>")
            .await;
        juliet.expect_with_id(
            "push",
            "<iq type='set' id='push' to='juliet@localhost/chamber'><unblock xmlns='urn:xmpp:blocking'/></iq>",
        );
        juliet.expect(
            "<iq type='result' id='unblock2' from='juliet@localhost' to='juliet@localhost/chamber'/>",
        );
        assert!(
            server
                .store
                .blocklist("juliet@localhost")
                .await
                .expect("blocklist")
                .is_empty()
        );
        let romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<message to='juliet@localhost' id='m5'><body>Free</body></message>")
            .await;
        juliet.expect(
            "<message from='romeo@localhost/orchard' to='juliet@localhost' id='m5'><body>Free</body></message>",
        );
    }

    #[tokio::test]
    async fn xep0191_block_lasts_across_sessions_and_applies_while_offline() {
        let server = blocking_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/chamber", 0).await;
        block(&mut juliet, &["romeo@localhost"]).await;
        server.session_closed(&juliet.session).await;

        // Offline: the blocked contact bounces, another sender's message is stored.
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send(
                "<message to='juliet@localhost' type='chat' id='m6'><body>Hello?</body></message>",
            )
            .await;
        assert_eq!(
            romeo
                .recv()
                .and_then(|m| m.attr("type").map(str::to_owned))
                .as_deref(),
            Some("error")
        );
        let mut nurse = Client::online(&server, "nurse@localhost/kitchen", 0).await;
        nurse
            .send("<message to='juliet@localhost' type='chat' id='m7'><body>Up!</body></message>")
            .await;
        nurse.silent();
        assert_eq!(
            server
                .store
                .offline_count("juliet@localhost")
                .await
                .expect("count"),
            1
        );

        // A new session has the list loaded from storage.
        let _juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        romeo
            .send("<message to='juliet@localhost' type='chat' id='m8'><body>Now?</body></message>")
            .await;
        assert_eq!(
            romeo
                .recv()
                .and_then(|m| m.attr("type").map(str::to_owned))
                .as_deref(),
            Some("error")
        );
    }

    /// An empty blocklist is loaded once: later logins and stanzas to the offline account do
    /// not ask storage again, until the module itself stores a block.
    #[tokio::test]
    async fn an_empty_blocklist_is_remembered_until_a_block() {
        let server = blocking_server().await;
        let juliet = BareJid::new("juliet@localhost").expect("jid");
        let romeo = Jid::new("romeo@localhost").expect("jid");
        assert!(!blocks(&server, &juliet, &romeo).await);
        // Written behind the module's back (nothing in Franca does this): still unseen, which
        // shows the answer came from memory.
        server
            .store
            .block(juliet.as_str(), &["romeo@localhost".to_owned()])
            .await
            .expect("store");
        assert!(!blocks(&server, &juliet, &romeo).await);
        // A block through the module forgets the account, so the next load reads storage.
        let mut client = Client::online(&server, "juliet@localhost/chamber", 0).await;
        block(&mut client, &["tybalt@localhost"]).await;
        server.session_closed(&client.session).await;
        assert!(blocks(&server, &juliet, &romeo).await);
        let tybalt = Jid::new("tybalt@localhost").expect("jid");
        assert!(blocks(&server, &juliet, &tybalt).await);
    }
}
