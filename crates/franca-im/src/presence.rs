//! Presence and presence subscriptions, RFC 6121 §3 and §4, with the state tables of
//! Appendix A.
//!
//! - §3.1–§3.3 and Appendix A.2/A.3: the subscription state machine, on the user's server for
//!   outbound `subscribe`/`subscribed`/`unsubscribe`/`unsubscribed` and on the contact's server
//!   for the inbound ones. The inbound side only assumes the sender is the bare JID in `from`, so
//!   it serves a contact on any server once federation delivers through the same hook.
//! - §3.1.3: a request the contact has not answered is kept (the serialised `subscribe`, on a
//!   hidden roster item when the requester is not in the roster) and re-delivered at every
//!   initial presence until it is approved or declined.
//! - §3.4: subscription pre-approval.
//! - §4.2 initial presence (broadcast, probes, the user's other resources), §4.3 probes, §4.4
//!   presence updates, §4.5 unavailable presence (also when a session ends), §4.6 directed
//!   presence, and §4.7.2.3 priority, clamped to −128..=127.
//!
//! All subscription state lives in the store, so it survives restarts; per-session presence
//! lives in [`franca_core::session::PresenceState`].

use crate::roster;
use franca_core::session::{next_presence_seq, serialise};
use franca_core::{Flow, Module, Server, Session, SessionEvent};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::NS_CLIENT;
use franca_store::{RosterItem, StoreError, Subscription};
use franca_xml::{Element, Limits};
use jid::{BareJid, FullJid, Jid};
use std::collections::HashSet;
use std::sync::Arc;

/// Most directed-presence recipients remembered per session (§4.6), so a client cannot grow
/// server memory without bound; beyond it, recipients are not told when the session ends.
pub const MAX_DIRECTED: usize = 1000;

/// The presence module.
pub struct Presence;

/// The `type` of a presence stanza (RFC 6121 §4.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Available,
    Unavailable,
    Probe,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Error,
    Unknown,
}

fn presence_type(stanza: &Element) -> Type {
    match stanza.attr("type") {
        None => Type::Available,
        Some("unavailable") => Type::Unavailable,
        Some("probe") => Type::Probe,
        Some("subscribe") => Type::Subscribe,
        Some("subscribed") => Type::Subscribed,
        Some("unsubscribe") => Type::Unsubscribe,
        Some("unsubscribed") => Type::Unsubscribed,
        Some("error") => Type::Error,
        Some(_) => Type::Unknown,
    }
}

#[async_trait::async_trait]
impl Module for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    async fn outbound(
        &self,
        server: &Arc<Server>,
        session: &Arc<Session>,
        stanza: &mut Element,
    ) -> Flow {
        if stanza.name != "presence" {
            return Flow::Continue;
        }
        outbound(server, session, stanza).await
    }

    async fn inbound(&self, server: &Arc<Server>, to: &BareJid, stanza: &mut Element) -> Flow {
        if stanza.name != "presence" {
            return Flow::Continue;
        }
        inbound(server, to, stanza).await
    }

    async fn session_event(&self, server: &Arc<Server>, event: &SessionEvent) {
        if let SessionEvent::Closed(session) = event {
            closed(server, session).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound: presence from a local session.

async fn outbound(server: &Arc<Server>, session: &Arc<Session>, stanza: &mut Element) -> Flow {
    // The router has already parsed and normalised 'to' (and answered a malformed one).
    let to = match stanza.attr("to").map(Jid::new) {
        None => None,
        Some(Ok(to)) => Some(to),
        Some(Err(_)) => return Flow::Continue,
    };
    let ty = presence_type(stanza);
    match (ty, to) {
        (Type::Available, None) => {
            available(server, session, stanza.clone()).await;
            Flow::Handled
        }
        (Type::Unavailable, None) => {
            unavailable(server, session, stanza.clone()).await;
            Flow::Handled
        }
        (Type::Available | Type::Unavailable, Some(to)) => {
            directed(server, session, &to, ty).await;
            Flow::Continue
        }
        // A probe with no addressee asks nothing of anyone.
        (Type::Probe, None) => Flow::Handled,
        // A client probe keeps its full 'from', so only the asking resource gets the answer.
        (Type::Probe, Some(_)) => Flow::Continue,
        (Type::Subscribe | Type::Subscribed | Type::Unsubscribe | Type::Unsubscribed, to) => {
            if let Some(to) = to {
                subscription_out(server, session, stanza, &to, ty).await;
            }
            // Without an addressee there is nobody to (un)subscribe: dropped.
            Flow::Handled
        }
        (Type::Error, _) => Flow::Continue,
        (Type::Unknown, _) => {
            server
                .reply_error(stanza, StanzaError::new(Cond::BadRequest))
                .await;
            Flow::Handled
        }
    }
}

/// §4.7.2.3: an integer in −128..=127; out-of-range values are clamped and anything unreadable
/// counts as the default, 0.
fn priority(stanza: &Element) -> i8 {
    stanza
        .child("priority", &stanza.ns)
        .and_then(|p| p.text().trim().parse::<i64>().ok())
        .and_then(|p| i8::try_from(p.clamp(-128, 127)).ok())
        .unwrap_or(0)
}

fn from_contact(item: &RosterItem) -> bool {
    matches!(item.subscription, Subscription::From | Subscription::Both)
}

fn to_contact(item: &RosterItem) -> bool {
    matches!(item.subscription, Subscription::To | Subscription::Both)
}

/// The whole roster, hidden items included; empty (and logged) when storage fails, since
/// presence has nobody to tell an error to. Shared with the store's roster cache rather than
/// copied: presence reads it on every presence stanza.
async fn load_roster(server: &Server, user: &BareJid) -> LoadedRoster {
    match server.store.roster_shared(user.as_str()).await {
        Ok(roster) => LoadedRoster(roster),
        Err(e) => {
            tracing::error!(%user, "storage error loading roster for presence: {e}");
            LoadedRoster(Arc::default())
        }
    }
}

/// A roster as presence reads it: the store's shared copy, iterated like a slice of items.
struct LoadedRoster(Arc<franca_store::Roster>);

impl std::ops::Deref for LoadedRoster {
    type Target = [RosterItem];
    fn deref(&self) -> &[RosterItem] {
        &self.0.items
    }
}

impl<'a> IntoIterator for &'a LoadedRoster {
    type Item = &'a RosterItem;
    type IntoIter = std::slice::Iter<'a, RosterItem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.items.iter()
    }
}

fn bare_of(jid: &str) -> String {
    match Jid::new(jid) {
        Ok(j) => j.to_bare().as_str().to_owned(),
        Err(_) => jid.to_owned(),
    }
}

async fn route_to(server: &Arc<Server>, stanza: &Element, to: &str) {
    let mut copy = stanza.clone();
    copy.set_attr("to", to);
    server.route(copy).await;
}

tokio::task_local! {
    /// While a session's initial probes (§4.2.2) are routed: its full JID and `available_seq`.
    /// A probe of a local contact is answered within that same call, so [`probe`] can tell it
    /// from a probe the client sent itself (always answered in full) and leave out the
    /// presences that the contact's broadcast delivers instead (see [`broadcast_to`]).
    static INITIAL_PROBE: (FullJid, u64);
}

/// Deliver available presence broadcast by a local session, stamped `seq` when it became the
/// session's `last`, to `to`: a contact's bare JID or the user's own.
///
/// On a local account this is the router's delivery to a bare JID (§8.5.2.1.2: every available
/// resource, negative priority included) after the same inbound hooks, with one exception
/// that makes concurrent logins exactly-once: a session that became available after `seq` was
/// taken is skipped, because the answer to its initial probe (or, for the user's own
/// resources, the presence of the other resources sent to it) reads this presence or a newer
/// one. A session available since earlier is never skipped, and the probe answer leaves this
/// presence out for it (see [`next_presence_seq`] for why the two views agree).
async fn broadcast_to(server: &Arc<Server>, stanza: &Element, to: &str, seq: u64) {
    let local = Jid::new(to)
        .ok()
        .filter(|j| j.node().is_some() && j.resource().is_none())
        .filter(|j| server.serves(j.domain().as_str()));
    let Some(bare) = local.map(|j| j.to_bare()) else {
        return route_to(server, stanza, to).await;
    };
    // Not through the router even when nobody is online: a session could become available
    // while the router awaits, and the router would not skip it.
    if !server.account_exists(&bare).await {
        return; // §8.5.1: presence to no such account is dropped, as the router does
    }
    let mut copy = stanza.clone();
    copy.set_attr("to", bare.as_str());
    if server.inbound_hooks(&bare, &mut copy).await == Flow::Handled {
        return;
    }
    let xml = serialise(&copy);
    for s in server.sessions.resources(&bare) {
        let reaches = {
            let p = s.presence();
            p.available && p.available_seq <= seq
        };
        if reaches {
            s.send_xml(xml.clone());
        }
    }
}

/// §4.2 initial presence and §4.4 presence updates.
async fn available(server: &Arc<Server>, session: &Arc<Session>, stanza: Element) {
    let user = session.bare();
    // Stamped in the critical section that makes the presence (and, when initial, the
    // availability) visible, as `next_presence_seq` requires. Initial presence has one stamp
    // for both, so that the session's echo of itself passes `broadcast_to`.
    let (initial, seq) = {
        let mut p = session.presence();
        let seq = next_presence_seq();
        let initial = !p.available;
        if initial {
            p.available = true;
            p.available_seq = seq;
        }
        p.priority = priority(&stanza);
        p.last = Some(stanza.clone());
        p.last_seq = seq;
        (initial, seq)
    };
    let roster = load_roster(server, &user).await;
    let mut told = HashSet::new();
    // §4.2.2/§4.4.2: every contact subscribed to the user, at its bare JID.
    for item in roster.iter().filter(|i| from_contact(i)) {
        broadcast_to(server, &stanza, &item.jid, seq).await;
        told.insert(item.jid.clone());
    }
    // The user's available resources, this one included: an entity is implicitly subscribed
    // to its own presence (§4.2.2).
    broadcast_to(server, &stanza, user.as_str(), seq).await;
    // §4.6: those that got directed presence follow the updates until told otherwise.
    let directed: Vec<String> = session.presence().directed.iter().cloned().collect();
    for to in directed {
        if !told.contains(&bare_of(&to)) {
            route_to(server, &stanza, &to).await;
        }
    }
    if !initial {
        return;
    }
    // §4.2.2: probe every contact the user is subscribed to, from the full JID so the answers
    // reach this resource only (the others already know).
    let probes = async {
        for item in roster.iter().filter(|i| to_contact(i)) {
            if probe_reachable(server, &item.jid) {
                let probe = Element::new("presence", NS_CLIENT)
                    .with_attr("type", "probe")
                    .with_attr("from", session.jid.as_str())
                    .with_attr("to", item.jid.clone());
                server.route(probe).await;
            }
        }
    };
    INITIAL_PROBE
        .scope((session.jid.clone(), seq), probes)
        .await;
    // The presence of the user's other available resources, for the new one: the presences
    // set before it became available; the later ones reached it by `broadcast_to`.
    for other in server.sessions.resources(&user) {
        if other.id == session.id {
            continue;
        }
        if let Some((last, stamp)) = current_presence(&other)
            && stamp < seq
        {
            route_to(server, &last, session.jid.as_str()).await;
        }
    }
    // Offline messages and the like are delivered on this.
    server.emit(&SessionEvent::Available(session.clone())).await;
    // §3.1.3: unanswered subscription requests, again, until approved or declined.
    for item in &roster {
        if let Some(xml) = &item.pending_in {
            session.send(&stored_request(xml, &item.jid, &user));
        }
    }
}

/// Whether a probe of `contact` can go anywhere: a local account, or a remote one federation
/// may reach (policy). Probes that could only bounce would produce errors at each login.
fn probe_reachable(server: &Server, contact: &str) -> bool {
    match Jid::new(contact) {
        Ok(jid) => server.reachable(jid.domain().as_str()),
        Err(_) => false,
    }
}

/// The presence a session last broadcast, if it is available, with its `last_seq` (read under
/// the same lock, so the stamp is that presence's).
fn current_presence(session: &Session) -> Option<(Element, u64)> {
    let p = session.presence();
    if !p.available {
        return None;
    }
    let mut last = p.last.clone()?;
    let stamp = p.last_seq;
    drop(p);
    last.set_attr("from", session.jid.as_str());
    Some((last, stamp))
}

/// §4.5 unavailable presence sent by the client.
async fn unavailable(server: &Arc<Server>, session: &Arc<Session>, stanza: Element) {
    let (was_available, directed) = take_presence(session);
    broadcast_unavailable(server, session, stanza, was_available, directed).await;
}

/// A session ended without (or after) unavailable presence: tell those who saw it online.
async fn closed(server: &Arc<Server>, session: &Arc<Session>) {
    let (was_available, directed) = take_presence(session);
    if !was_available && directed.is_empty() {
        return;
    }
    let stanza = Element::new("presence", NS_CLIENT)
        .with_attr("type", "unavailable")
        .with_attr("from", session.jid.as_str());
    broadcast_unavailable(server, session, stanza, was_available, directed).await;
}

/// Mark the session unavailable; returns whether it was available and its directed list.
fn take_presence(session: &Session) -> (bool, HashSet<String>) {
    let mut p = session.presence();
    let was_available = p.available;
    p.available = false;
    p.last = None;
    (was_available, std::mem::take(&mut p.directed))
}

async fn broadcast_unavailable(
    server: &Arc<Server>,
    session: &Session,
    stanza: Element,
    was_available: bool,
    directed: HashSet<String>,
) {
    let user = session.bare();
    let mut told = HashSet::new();
    // Contacts never heard of a resource that never sent initial presence.
    if was_available {
        for item in load_roster(server, &user)
            .await
            .iter()
            .filter(|i| from_contact(i))
        {
            route_to(server, &stanza, &item.jid).await;
            told.insert(item.jid.clone());
        }
        // The user's other available resources (this one is no longer available). Skipped
        // when there are none, the usual logout: routing it would only ask storage whether
        // the account exists and load its blocklist, to deliver to nobody.
        if !server.sessions.available(&user).is_empty() {
            route_to(server, &stanza, user.as_str()).await;
        }
    }
    for to in directed {
        if !told.contains(&bare_of(&to)) {
            route_to(server, &stanza, &to).await;
        }
    }
}

/// §4.6: remember who got directed available presence, to tell them when the user leaves.
async fn directed(server: &Arc<Server>, session: &Session, to: &Jid, ty: Type) {
    let user = session.bare();
    let target = to.to_bare();
    if target == user {
        return; // the user's own resources hear the unavailable broadcast anyway
    }
    if ty == Type::Unavailable {
        session.presence().directed.remove(to.as_str());
        return;
    }
    // A contact subscribed to the user gets the broadcast unavailable anyway.
    let subscribed = match server
        .store
        .roster_item(user.as_str(), target.as_str())
        .await
    {
        Ok(item) => item.is_some_and(|i| from_contact(&i)),
        Err(e) => {
            tracing::error!(%user, "storage error checking directed presence: {e}");
            false
        }
    };
    if subscribed {
        return;
    }
    let mut p = session.presence();
    if p.directed.len() < MAX_DIRECTED {
        p.directed.insert(to.as_str().to_owned());
    } else {
        tracing::debug!(jid = %session.jid, "too many directed presence recipients to track");
    }
}

// ---------------------------------------------------------------------------------------------
// The subscription state machine (Appendix A), as pure transitions on the roster item of the
// local account. `RosterItem` keeps subscription, pending-out (`ask`), pending-in and the
// pre-approval flag separately; the combinations below are exactly the states of A.1.

/// A.2.1, outbound `subscribe`: None and From gain Pending Out. The stanza is always routed.
/// Returns whether the item changed.
fn out_subscribe(item: &mut RosterItem) -> bool {
    let before = item.clone();
    // §3.1.2: the contact enters the roster (a hidden pending-in record becomes visible).
    item.hidden = false;
    if matches!(item.subscription, Subscription::None | Subscription::From) {
        item.ask = true;
    }
    *item != before
}

/// A.2.2, outbound `unsubscribe`: To and Pending Out are cancelled. The stanza is always
/// routed. Returns whether the item changed.
fn out_unsubscribe(item: &mut RosterItem) -> bool {
    let before = item.clone();
    item.subscription = match item.subscription {
        Subscription::To => Subscription::None,
        Subscription::Both => Subscription::From,
        s => s,
    };
    item.ask = false;
    *item != before
}

/// What an outbound `subscribed` does (A.2.3, §3.4.2).
#[derive(Debug, PartialEq, Eq)]
enum Approval {
    /// From, From + Pending Out, Both: already subscribed; silently ignored.
    Ignore,
    /// No pending request: a pre-approval, never routed (`changed`: store and push).
    PreApproved { changed: bool },
    /// A pending request approved: route, push, then send current presence.
    Approved,
}

fn out_subscribed(item: &mut RosterItem) -> Approval {
    if from_contact(item) {
        return Approval::Ignore;
    }
    if item.pending_in.is_some() {
        item.subscription = match item.subscription {
            Subscription::To => Subscription::Both,
            _ => Subscription::From,
        };
        item.pending_in = None;
        item.approved = false;
        // §3.1.5: a contact that was not in the roster is added.
        item.hidden = false;
        return Approval::Approved;
    }
    let changed = !item.approved || item.hidden;
    item.approved = true;
    item.hidden = false;
    Approval::PreApproved { changed }
}

/// What an outbound `unsubscribed` does (A.2.4, §3.2.2, §3.4).
#[derive(Debug, PartialEq, Eq)]
enum Cancel {
    /// From/Both lost: send unavailable, route, push.
    Cancelled,
    /// A pending request declined: route; the item changes but shows nothing new.
    Declined,
    /// A pre-approval withdrawn: push, never routed.
    PreApprovalWithdrawn,
    /// Nothing to cancel here; routed anyway so a contact out of step resynchronises.
    Nothing,
}

fn out_unsubscribed(item: &mut RosterItem) -> Cancel {
    if from_contact(item) {
        item.subscription = match item.subscription {
            Subscription::Both => Subscription::To,
            _ => Subscription::None,
        };
        item.pending_in = None;
        item.approved = false;
        return Cancel::Cancelled;
    }
    if item.pending_in.is_some() {
        item.pending_in = None;
        item.approved = false;
        return Cancel::Declined;
    }
    if item.approved {
        item.approved = false;
        return Cancel::PreApprovalWithdrawn;
    }
    Cancel::Nothing
}

/// What an inbound `subscribe` does on the contact's server (A.3.1, §3.1.3, §3.4.2).
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// From/Both: the user is already subscribed; auto-reply `subscribed`.
    AlreadySubscribed,
    /// Pre-approved: now From/Both; auto-reply `subscribed`, push, send presence.
    PreApproved,
    /// A request is already pending: no state change and no delivery.
    Duplicate,
    /// Now pending in: store it and deliver it to the available resources.
    Pending,
}

fn in_subscribe(item: &mut RosterItem, stanza_xml: String) -> Request {
    if from_contact(item) {
        return Request::AlreadySubscribed;
    }
    if item.pending_in.is_some() {
        return Request::Duplicate;
    }
    if item.approved {
        item.subscription = match item.subscription {
            Subscription::To => Subscription::Both,
            _ => Subscription::From,
        };
        item.approved = false;
        return Request::PreApproved;
    }
    item.pending_in = Some(stanza_xml);
    Request::Pending
}

/// A.3.2, inbound `subscribed`: only answers a pending-out request. Returns whether it did
/// (deliver and push); otherwise it is ignored.
fn in_subscribed(item: &mut RosterItem) -> bool {
    if !item.ask || to_contact(item) {
        return false;
    }
    item.subscription = match item.subscription {
        Subscription::From => Subscription::Both,
        _ => Subscription::To,
    };
    item.ask = false;
    true
}

/// A.3.3, inbound `unsubscribe`: cancels From, or withdraws a pending-in request. Returns
/// (changed, whether From was lost).
fn in_unsubscribe(item: &mut RosterItem) -> (bool, bool) {
    let lost_from = from_contact(item);
    let had_request = item.pending_in.is_some();
    item.subscription = match item.subscription {
        Subscription::Both => Subscription::To,
        Subscription::From => Subscription::None,
        s => s,
    };
    item.pending_in = None;
    (lost_from || had_request, lost_from)
}

/// A.3.4, inbound `unsubscribed`: cancels To or a pending-out request. Returns whether it did.
fn in_unsubscribed(item: &mut RosterItem) -> bool {
    if !to_contact(item) && !item.ask {
        return false;
    }
    item.subscription = match item.subscription {
        Subscription::Both => Subscription::From,
        Subscription::To => Subscription::None,
        s => s,
    };
    item.ask = false;
    true
}

/// A hidden item that no longer records anything is deleted rather than stored.
fn is_void(item: &RosterItem) -> bool {
    item.hidden
        && item.subscription == Subscription::None
        && !item.ask
        && item.pending_in.is_none()
        && !item.approved
}

/// Store `item` of `user`'s roster; returns the new roster version.
async fn save(server: &Server, user: &BareJid, item: &RosterItem) -> Result<i64, StoreError> {
    if is_void(item) {
        server
            .store
            .remove_roster_item(user.as_str(), &item.jid)
            .await
    } else {
        server.store.put_roster_item(user.as_str(), item).await
    }
}

/// Store and push (§2.1.6) an item whose visible state changed.
async fn save_and_push(server: &Arc<Server>, user: &BareJid, item: &RosterItem) -> bool {
    match save(server, user, item).await {
        Ok(version) => {
            roster::push(server, user, item, version).await;
            true
        }
        Err(e) => {
            tracing::error!(%user, contact = %item.jid, "storage error saving roster item: {e}");
            false
        }
    }
}

/// A `subscribe`/`subscribed`/`unsubscribe`/`unsubscribed` between two bare JIDs.
pub(crate) fn subscription_stanza(ty: &str, from: &str, to: &str) -> Element {
    Element::new("presence", NS_CLIENT)
        .with_attr("type", ty)
        .with_attr("from", from)
        .with_attr("to", to)
}

/// Send the current presence of each of `user`'s available resources to `to` (§3.1.5, after
/// approving a subscription).
pub(crate) async fn send_current_presence(server: &Arc<Server>, user: &BareJid, to: &str) {
    for s in server.sessions.resources(user) {
        if let Some((last, _)) = current_presence(&s) {
            route_to(server, &last, to).await;
        }
    }
}

/// Send unavailable presence from each of `user`'s available resources to `to` (§3.2.2,
/// §3.3.3: the subscription that let `to` see them is ending).
pub(crate) async fn send_unavailable(server: &Arc<Server>, user: &BareJid, to: &str) {
    for s in server.sessions.resources(user) {
        if s.presence().available {
            let stanza = Element::new("presence", NS_CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", s.jid.as_str())
                .with_attr("to", to);
            server.route(stanza).await;
        }
    }
}

/// The user's server (§3.1.2, §3.1.5, §3.2.2, §3.3.2, §3.4.2; Appendix A.2).
async fn subscription_out(
    server: &Arc<Server>,
    session: &Session,
    stanza: &mut Element,
    to: &Jid,
    ty: Type,
) {
    let user = session.bare();
    let contact = to.to_bare();
    if contact == user {
        return; // an entity is implicitly subscribed to itself; nothing to manage
    }
    let existing = match server
        .store
        .roster_item(user.as_str(), contact.as_str())
        .await
    {
        Ok(item) => item,
        Err(e) => {
            tracing::error!(%user, "storage error reading roster item: {e}");
            server
                .reply_error(stanza, StanzaError::new(Cond::InternalServerError))
                .await;
            return;
        }
    };
    let is_new = existing.is_none();
    if is_new && matches!(ty, Type::Subscribe | Type::Subscribed) {
        let refusal = match roster::has_room(server, &user).await {
            Ok(true) => None,
            Ok(false) => Some(roster::refusal(roster::ROSTER_FULL)),
            Err(e) => {
                tracing::error!(%user, "storage error counting roster items: {e}");
                Some(StanzaError::new(Cond::InternalServerError))
            }
        };
        if let Some(error) = refusal {
            server.reply_error(stanza, error).await;
            return;
        }
    }
    let mut item = existing.unwrap_or_else(|| RosterItem {
        jid: contact.as_str().to_owned(),
        ..RosterItem::default()
    });
    // §3.1.2 (and likewise for the other types): both addresses are bare JIDs.
    stanza.set_attr("from", user.as_str());
    stanza.set_attr("to", contact.as_str());
    let contact = contact.as_str();
    match ty {
        Type::Subscribe => {
            if out_subscribe(&mut item) && !save_and_push(server, &user, &item).await {
                return;
            }
            server.route(stanza.clone()).await;
            if no_such_local_account(server, to).await {
                // RFC 6121 §8.5.1: a request to an account that does not exist is answered
                // with 'unsubscribed'. The router drops presence to unknown local accounts
                // before any hook sees it, so the answer is made here, as if from there.
                let answer = subscription_stanza("unsubscribed", contact, user.as_str());
                server.route(answer).await;
            }
        }
        Type::Unsubscribe => {
            if out_unsubscribe(&mut item) && !save_and_push(server, &user, &item).await {
                return;
            }
            server.route(stanza.clone()).await;
        }
        Type::Subscribed => match out_subscribed(&mut item) {
            Approval::Ignore => {}
            Approval::PreApproved { changed } => {
                if changed {
                    save_and_push(server, &user, &item).await;
                }
            }
            Approval::Approved => {
                if !save_and_push(server, &user, &item).await {
                    return;
                }
                server.route(stanza.clone()).await;
                send_current_presence(server, &user, contact).await;
            }
        },
        Type::Unsubscribed => match out_unsubscribed(&mut item) {
            Cancel::Cancelled => {
                if !save_and_push(server, &user, &item).await {
                    return;
                }
                // While the contact is still subscribed on its side (§3.2.2).
                send_unavailable(server, &user, contact).await;
                server.route(stanza.clone()).await;
            }
            Cancel::Declined => {
                if let Err(e) = save(server, &user, &item).await {
                    tracing::error!(%user, "storage error declining a request: {e}");
                    return;
                }
                server.route(stanza.clone()).await;
            }
            Cancel::PreApprovalWithdrawn => {
                save_and_push(server, &user, &item).await;
            }
            Cancel::Nothing => server.route(stanza.clone()).await,
        },
        _ => {}
    }
}

/// A `localpart@domain` on a domain served here, with no account behind it.
async fn no_such_local_account(server: &Server, to: &Jid) -> bool {
    to.node().is_some()
        && server.serves(to.domain().as_str())
        && !server.account_exists(&to.to_bare()).await
}

// ---------------------------------------------------------------------------------------------
// Inbound: presence for a local account.

async fn inbound(server: &Arc<Server>, owner: &BareJid, stanza: &mut Element) -> Flow {
    match presence_type(stanza) {
        // §8.5.2/§8.5.3 delivery is the router's.
        Type::Available | Type::Unavailable => Flow::Continue,
        // Errors go to the full JID they answer; one to a bare JID has nobody to go to.
        Type::Error => {
            let full = stanza
                .attr("to")
                .and_then(|t| Jid::new(t).ok())
                .is_some_and(|t| t.is_full());
            if full { Flow::Continue } else { Flow::Handled }
        }
        Type::Probe => {
            probe(server, owner, stanza).await;
            Flow::Handled
        }
        ty @ (Type::Subscribe | Type::Subscribed | Type::Unsubscribe | Type::Unsubscribed) => {
            subscription_in(server, owner, stanza, ty).await;
            Flow::Handled
        }
        Type::Unknown => Flow::Handled,
    }
}

/// §4.3.2: answer a probe of `owner`'s presence.
async fn probe(server: &Arc<Server>, owner: &BareJid, stanza: &Element) {
    // 'from' was stamped by the sender's server; without a readable one there is nobody to
    // answer.
    let Some(from) = stanza.attr("from").and_then(|f| Jid::new(f).ok()) else {
        return;
    };
    let prober = from.to_bare();
    if prober != *owner {
        let item = match server
            .store
            .roster_item(owner.as_str(), prober.as_str())
            .await
        {
            Ok(item) => item,
            Err(e) => {
                tracing::error!(%owner, "storage error answering a probe: {e}");
                return;
            }
        };
        match item {
            Some(i) if from_contact(&i) => {}
            // A pending request is not a subscription, but telling its sender "unsubscribed"
            // would cancel the request on its side.
            Some(i) if i.pending_in.is_some() => return,
            _ => {
                // Not subscribed: say so, which also resynchronises a server out of step.
                let reply = subscription_stanza("unsubscribed", owner.as_str(), prober.as_str());
                server.route(reply).await;
                return;
            }
        }
    }
    // The initial probe of a local session (available since `since`) gets only the presences
    // set before that; each later one is broadcast to it (`broadcast_to`). A probe the client
    // sent itself is answered in full.
    let since = INITIAL_PROBE
        .try_with(|(jid, seq)| (jid.as_str() == from.as_str()).then_some(*seq))
        .ok()
        .flatten();
    let mut answered = false;
    for s in server.sessions.resources(owner) {
        if let Some((last, stamp)) = current_presence(&s) {
            // Available, so not "unavailable" below even when the broadcast is what tells.
            answered = true;
            if since.is_none_or(|since| stamp < since) {
                route_to(server, &last, from.as_str()).await;
            }
        }
    }
    if !answered {
        let reply = Element::new("presence", NS_CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", owner.as_str())
            .with_attr("to", from.as_str());
        server.route(reply).await;
    }
}

fn deliver(sessions: &[Arc<Session>], stanza: &Element) {
    for s in sessions {
        s.send(stanza);
    }
}

/// The contact's server (§3.1.3, §3.3.3, §3.4.2) and the user's server for answers
/// (§3.1.6, §3.2.3); Appendix A.3. `owner` is the local account, the sender may be anywhere.
async fn subscription_in(server: &Arc<Server>, owner: &BareJid, stanza: &mut Element, ty: Type) {
    let Some(peer) = stanza.attr("from").and_then(|f| Jid::new(f).ok()) else {
        return;
    };
    let peer = peer.to_bare();
    if peer == *owner {
        return;
    }
    // §3.1.3: a request to a full JID is treated as one to the bare JID; the sender's bare JID
    // is what the subscription is with.
    stanza.set_attr("from", peer.as_str());
    stanza.set_attr("to", owner.as_str());
    let existing = match server
        .store
        .roster_item(owner.as_str(), peer.as_str())
        .await
    {
        Ok(item) => item,
        Err(e) => {
            tracing::error!(%owner, "storage error reading roster item: {e}");
            return;
        }
    };
    let peer = peer.as_str();
    match ty {
        Type::Subscribe => {
            let mut item = match existing {
                Some(item) => item,
                None => {
                    if !roster::has_room(server, owner).await.unwrap_or(false) {
                        tracing::warn!(%owner, "roster full or unreadable; request dropped");
                        return;
                    }
                    // §3.1.3: the requester is not added to the roster before approval.
                    RosterItem {
                        jid: peer.to_owned(),
                        hidden: true,
                        ..RosterItem::default()
                    }
                }
            };
            match in_subscribe(&mut item, stanza.to_xml()) {
                Request::AlreadySubscribed => {
                    server
                        .route(subscription_stanza("subscribed", owner.as_str(), peer))
                        .await;
                }
                Request::PreApproved => {
                    if !save_and_push(server, owner, &item).await {
                        return;
                    }
                    server
                        .route(subscription_stanza("subscribed", owner.as_str(), peer))
                        .await;
                    send_current_presence(server, owner, peer).await;
                }
                Request::Duplicate => {}
                Request::Pending => {
                    // Stored first: the request must survive until it is answered.
                    if let Err(e) = save(server, owner, &item).await {
                        tracing::error!(%owner, "storage error keeping a request: {e}");
                        return;
                    }
                    deliver(&server.sessions.available(owner), stanza);
                }
            }
        }
        Type::Subscribed => {
            let Some(mut item) = existing else { return };
            if in_subscribed(&mut item) {
                answer(server, owner, &item, stanza).await;
            }
        }
        Type::Unsubscribe => {
            let Some(mut item) = existing else { return };
            let (changed, lost_from) = in_unsubscribe(&mut item);
            if changed {
                answer(server, owner, &item, stanza).await;
                if lost_from {
                    // §3.3.3: the user no longer sees the contact's presence.
                    send_unavailable(server, owner, peer).await;
                }
            }
        }
        Type::Unsubscribed => {
            let Some(mut item) = existing else { return };
            if in_unsubscribed(&mut item) {
                answer(server, owner, &item, stanza).await;
            }
        }
        _ => {}
    }
}

/// Store a changed item, deliver the stanza that changed it to the interested resources, then
/// push the item (§3.1.6, §3.2.3, §3.3.3).
async fn answer(server: &Arc<Server>, owner: &BareJid, item: &RosterItem, stanza: &Element) {
    let version = match save(server, owner, item).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(%owner, "storage error saving roster item: {e}");
            return;
        }
    };
    deliver(&roster::interested(server, owner), stanza);
    roster::push(server, owner, item, version).await;
}

/// A stored `subscribe` (§3.1.3), parsed again; rebuilt bare if the stored form is unreadable.
fn stored_request(xml: &str, from: &str, to: &BareJid) -> Element {
    match parse_stanza(xml) {
        Some(el) if el.name == "presence" && el.attr("type") == Some("subscribe") => el,
        _ => subscription_stanza("subscribe", from, to.as_str()),
    }
}

/// Parse one serialised stanza (as written by [`Element::to_xml`]) with the stream reader, so
/// stored XML passes the same limits as XML off the wire.
pub(crate) fn parse_stanza(xml: &str) -> Option<Element> {
    franca_xml::read_document(xml.as_bytes(), Limits::default(), Some(NS_CLIENT))
        .ok()
        .flatten()
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::roster_kit::{Env, J, JB, R, RO, lovers, push};

    async fn roster_of(env: &Env, user: &str) -> Vec<RosterItem> {
        env.server.store.roster(user).await.expect("roster").1
    }

    async fn item_of(env: &Env, user: &str, contact: &str) -> Option<RosterItem> {
        env.server
            .store
            .roster_item(user, contact)
            .await
            .expect("roster item")
    }

    #[tokio::test]
    async fn rfc6121_3_1_subscription_handshake_to_both() {
        let env = Env::new(&[J, R]).await;
        let mut j = env.online(JB).await;
        let mut r = env.online(RO).await;

        // §3.1.2: the user's server pushes None + Pending Out and routes the request, from
        // and to bare JIDs; §3.1.3: the contact's available resources get it.
        j.send("<presence type='subscribe' to='romeo@localhost/orchard'/>")
            .await;
        assert_eq!(
            j.recv(),
            [push(
                JB,
                1,
                "<item jid='romeo@localhost' subscription='none' ask='subscribe'/>"
            )]
        );
        assert_eq!(
            r.recv(),
            ["<presence type='subscribe' to='romeo@localhost' from='juliet@localhost'/>"]
        );
        // The request is pending in, on a hidden item: not in Romeo's roster yet.
        let pending = item_of(&env, R, J).await.expect("pending-in record");
        assert!(pending.hidden && pending.pending_in.is_some());

        // §3.1.5: approval. Romeo's roster gains Juliet with 'from'; §3.1.6: Juliet's
        // interested resources get the approval and a push to 'to', then Romeo's presence.
        r.send("<presence type='subscribed' to='juliet@localhost'/>")
            .await;
        assert_eq!(
            r.recv(),
            [push(
                RO,
                2,
                "<item jid='juliet@localhost' subscription='from'/>"
            )]
        );
        assert_eq!(
            j.recv(),
            [
                "<presence type='subscribed' to='juliet@localhost' from='romeo@localhost'/>"
                    .to_owned(),
                push(JB, 2, "<item jid='romeo@localhost' subscription='to'/>"),
                "<presence from='romeo@localhost/orchard' to='juliet@localhost'/>".to_owned(),
            ]
        );

        // And back: Romeo asks, Juliet approves; both end at 'both'.
        r.send("<presence type='subscribe' to='juliet@localhost'/>")
            .await;
        assert_eq!(
            r.recv(),
            [push(
                RO,
                3,
                "<item jid='juliet@localhost' subscription='from' ask='subscribe'/>"
            )]
        );
        assert_eq!(
            j.recv(),
            ["<presence type='subscribe' to='juliet@localhost' from='romeo@localhost'/>"]
        );
        j.send("<presence type='subscribed' to='romeo@localhost'/>")
            .await;
        assert_eq!(
            j.recv(),
            [push(
                JB,
                4,
                "<item jid='romeo@localhost' subscription='both'/>"
            )]
        );
        assert_eq!(
            r.recv(),
            [
                "<presence type='subscribed' to='romeo@localhost' from='juliet@localhost'/>"
                    .to_owned(),
                push(RO, 4, "<item jid='juliet@localhost' subscription='both'/>"),
                "<presence from='juliet@localhost/balcony' to='romeo@localhost'/>".to_owned(),
            ]
        );

        // A.2.1/A.3.1: asking again when already subscribed changes nothing; the contact's
        // server auto-replies 'subscribed' (§3.1.3) without bothering the contact, and the
        // user's server drops that reply as it changes nothing either (A.3.2).
        j.send("<presence type='subscribe' to='romeo@localhost'/>")
            .await;
        assert!(j.recv().is_empty());
        assert!(r.recv().is_empty());
    }

    #[tokio::test]
    async fn rfc6121_3_1_3_subscription_request_pending_in_redelivered() {
        let mut env = Env::new(&[J, R]).await;
        let mut j = env.online(JB).await;
        // Romeo is offline: the request waits, with its content (§3.1.3).
        j.send(
            "<presence type='subscribe' to='romeo@localhost'><status>it is the east</status>\
             </presence>",
        )
        .await;
        j.recv();
        let request = "<presence type='subscribe' to='romeo@localhost' from='juliet@localhost'>\
                       <status>it is the east</status></presence>";

        // Every initial presence gets it again until it is answered, across restarts.
        for _ in 0..2 {
            let mut r = env.bind(RO).await;
            r.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver=''/></iq>")
                .await;
            // Hidden: Juliet is not in Romeo's roster before he approves.
            assert_eq!(
                r.recv(),
                [
                    "<iq type='result' id='r1' from='romeo@localhost' to='romeo@localhost/orchard'>\
                  <query xmlns='jabber:iq:roster' ver='1'/></iq>"
                ]
            );
            r.send("<presence/>").await;
            assert_eq!(
                r.recv(),
                [
                    "<presence from='romeo@localhost/orchard' to='romeo@localhost'/>",
                    request
                ]
            );
            r.close().await;
            env.restart().await;
        }

        // A duplicate request while one is pending is neither stored again nor delivered
        // (A.3.1: no state change).
        let j = env.online(JB).await;
        let mut r = env.online(RO).await;
        j.send("<presence type='subscribe' to='romeo@localhost'/>")
            .await;
        assert!(r.recv().is_empty());

        // Declining (§3.2.2 via A.2.4) drops the hidden record; Juliet's server clears
        // Pending Out (A.3.4).
        r.send("<presence type='unsubscribed' to='juliet@localhost'/>")
            .await;
        assert!(r.recv().is_empty());
        assert!(item_of(&env, R, J).await.is_none());
        let mut j = j;
        assert_eq!(
            j.recv(),
            [
                "<presence type='unsubscribed' to='juliet@localhost' from='romeo@localhost'/>"
                    .to_owned(),
                push(JB, 2, "<item jid='romeo@localhost' subscription='none'/>"),
            ]
        );
        // Declined means gone: the next login brings no request.
        r.close().await;
        let mut r = env.bind(RO).await;
        r.send("<presence/>").await;
        assert_eq!(
            r.recv(),
            ["<presence from='romeo@localhost/orchard' to='romeo@localhost'/>"]
        );
    }

    #[tokio::test]
    async fn rfc6121_3_4_pre_approval() {
        let env = Env::new(&[J, R]).await;
        let mut j = env.online(JB).await;
        let mut r = env.online(RO).await;

        // §3.4.2: 'subscribed' without a pending request is a pre-approval: an item with
        // approved='true' is pushed, and nothing is routed to Juliet.
        r.send("<presence type='subscribed' to='juliet@localhost'/>")
            .await;
        assert_eq!(
            r.recv(),
            [push(
                RO,
                1,
                "<item jid='juliet@localhost' subscription='none' approved='true'/>"
            )]
        );
        assert!(j.recv().is_empty());

        // Juliet's request is approved at once by Romeo's server.
        j.send("<presence type='subscribe' to='romeo@localhost'/>")
            .await;
        assert_eq!(
            r.recv(),
            [push(
                RO,
                2,
                "<item jid='juliet@localhost' subscription='from'/>"
            )]
        );
        assert_eq!(
            j.recv(),
            [
                push(
                    JB,
                    1,
                    "<item jid='romeo@localhost' subscription='none' ask='subscribe'/>"
                ),
                "<presence type='subscribed' from='romeo@localhost' to='juliet@localhost'/>"
                    .to_owned(),
                push(JB, 2, "<item jid='romeo@localhost' subscription='to'/>"),
                "<presence from='romeo@localhost/orchard' to='juliet@localhost'/>".to_owned(),
            ]
        );
    }

    #[tokio::test]
    async fn rfc6121_3_4_pre_approval_withdrawn() {
        let env = Env::new(&[J, R]).await;
        let mut j = env.online(JB).await;
        let mut r = env.online(RO).await;
        r.send("<presence type='subscribed' to='juliet@localhost'/>")
            .await;
        r.recv();
        // 'unsubscribed' withdraws it, and is not routed either.
        r.send("<presence type='unsubscribed' to='juliet@localhost'/>")
            .await;
        assert_eq!(
            r.recv(),
            [push(
                RO,
                2,
                "<item jid='juliet@localhost' subscription='none'/>"
            )]
        );
        assert!(j.recv().is_empty());
        // Now Juliet's request waits for Romeo.
        j.send("<presence type='subscribe' to='romeo@localhost'/>")
            .await;
        assert_eq!(
            r.recv(),
            ["<presence type='subscribe' to='romeo@localhost' from='juliet@localhost'/>"]
        );
    }

    #[tokio::test]
    async fn rfc6121_3_2_cancelling_a_subscription() {
        let (env, mut j, mut r) = lovers().await;
        // Romeo cancels Juliet's subscription to his presence: she first sees him go
        // offline (§3.2.2), then the cancellation, and her item drops to 'from' (§3.2.3).
        r.send("<presence type='unsubscribed' to='juliet@localhost'/>")
            .await;
        assert_eq!(
            r.recv(),
            [push(
                RO,
                5,
                "<item jid='juliet@localhost' subscription='to'/>"
            )]
        );
        assert_eq!(
            j.recv(),
            [
                "<presence type='unavailable' from='romeo@localhost/orchard' \
                 to='juliet@localhost'/>"
                    .to_owned(),
                "<presence type='unsubscribed' to='juliet@localhost' from='romeo@localhost'/>"
                    .to_owned(),
                push(JB, 5, "<item jid='romeo@localhost' subscription='from'/>"),
            ]
        );
        // Romeo's updates no longer reach Juliet; hers still reach him.
        r.send("<presence><show>away</show></presence>").await;
        assert!(j.recv().is_empty());
        r.recv();
        j.send("<presence><show>dnd</show></presence>").await;
        assert_eq!(
            r.recv(),
            [
                "<presence from='juliet@localhost/balcony' to='romeo@localhost'>\
              <show>dnd</show></presence>"
            ]
        );
        assert_eq!(
            item_of(&env, J, R).await.map(|i| i.subscription),
            Some(Subscription::From)
        );
    }

    #[tokio::test]
    async fn rfc6121_3_3_unsubscribing() {
        let (env, mut j, mut r) = lovers().await;
        // Juliet stops listening to Romeo (§3.3.2); his server takes away her 'from' and
        // sends her his unavailable presence (§3.3.3).
        j.send("<presence type='unsubscribe' to='romeo@localhost'/>")
            .await;
        assert_eq!(
            j.recv(),
            [
                push(JB, 5, "<item jid='romeo@localhost' subscription='from'/>"),
                "<presence type='unavailable' from='romeo@localhost/orchard' \
                 to='juliet@localhost'/>"
                    .to_owned(),
            ]
        );
        assert_eq!(
            r.recv(),
            [
                "<presence type='unsubscribe' to='romeo@localhost' from='juliet@localhost'/>"
                    .to_owned(),
                push(RO, 5, "<item jid='juliet@localhost' subscription='to'/>"),
            ]
        );
        assert_eq!(
            item_of(&env, R, J).await.map(|i| i.subscription),
            Some(Subscription::To)
        );
    }

    #[tokio::test]
    async fn rfc6121_4_2_initial_presence_and_probes() {
        let (env, mut j, r) = lovers().await;
        r.close().await;
        assert_eq!(
            j.recv(),
            ["<presence type='unavailable' from='romeo@localhost/orchard' to='juliet@localhost'/>"]
        );
        // Romeo comes back with two resources.
        let mut hall = env.online("romeo@localhost/hall").await;
        j.recv();
        let mut r = env.bind(RO).await;
        r.send("<presence><priority>5</priority></presence>").await;
        let presence = "<presence from='romeo@localhost/orchard' to='{to}'><priority>5</priority>\
                        </presence>";
        // §4.2.2: to his contacts (bare JID) and to all of his available resources.
        assert_eq!(j.recv(), [presence.replace("{to}", J)]);
        assert_eq!(hall.recv(), [presence.replace("{to}", R)]);
        // The new resource gets its own presence back, the answer to its probe of Juliet,
        // and the presence of his other resource.
        assert_eq!(
            r.recv(),
            [
                presence.replace("{to}", R),
                "<presence from='juliet@localhost/balcony' to='romeo@localhost/orchard'/>"
                    .to_owned(),
                "<presence from='romeo@localhost/hall' to='romeo@localhost/orchard'/>".to_owned(),
            ]
        );
        assert_eq!(r.session.presence().priority, 5);

        // §4.4: an update goes to the contacts and all resources, and is not initial: no
        // probes again.
        r.send("<presence><show>away</show></presence>").await;
        let away =
            "<presence from='romeo@localhost/orchard' to='{to}'><show>away</show></presence>";
        assert_eq!(j.recv(), [away.replace("{to}", J)]);
        assert_eq!(r.recv(), [away.replace("{to}", R)]);
        assert_eq!(hall.recv(), [away.replace("{to}", R)]);

        // §4.5: unavailable goes to contacts and the other resources.
        r.send("<presence type='unavailable'><status>bye</status></presence>")
            .await;
        let gone = "<presence type='unavailable' from='romeo@localhost/orchard' to='{to}'>\
                    <status>bye</status></presence>";
        assert_eq!(j.recv(), [gone.replace("{to}", J)]);
        assert_eq!(hall.recv(), [gone.replace("{to}", R)]);
        assert!(r.recv().is_empty());
        // A later close tells nobody again.
        r.close().await;
        assert!(j.recv().is_empty());
        assert!(hall.recv().is_empty());
    }

    #[tokio::test]
    async fn rfc6121_4_3_probe_of_an_offline_contact() {
        let (env, j, r) = lovers().await;
        j.close().await;
        r.close().await;
        // Juliet is offline: Romeo's probe is answered with unavailable (§4.3.2).
        let mut r = env.bind(RO).await;
        r.send("<presence/>").await;
        assert_eq!(
            r.recv(),
            [
                "<presence from='romeo@localhost/orchard' to='romeo@localhost'/>",
                "<presence type='unavailable' from='juliet@localhost' \
                 to='romeo@localhost/orchard'/>"
            ]
        );
    }

    #[tokio::test]
    async fn rfc6121_4_3_2_probe_from_a_stranger() {
        let env = Env::new(&[J, R]).await;
        let _j = env.online(JB).await;
        let mut r = env.online(RO).await;
        // Romeo is not subscribed: no presence; the answer is 'unsubscribed', which his
        // server ignores (there is nothing to cancel).
        r.send("<presence type='probe' to='juliet@localhost'/>")
            .await;
        assert!(r.recv().is_empty());
        assert!(roster_of(&env, R).await.is_empty());
    }

    #[tokio::test]
    async fn rfc6121_4_6_directed_presence_and_unavailable_on_close() {
        let env = Env::new(&[J, R, "nurse@localhost"]).await;
        let j = env.online(JB).await;
        let mut nurse = env.online("nurse@localhost/kitchen").await;
        let mut r = env.online(RO).await;
        // Directed presence to someone not subscribed is delivered, and remembered.
        j.send("<presence to='nurse@localhost'><show>chat</show></presence>")
            .await;
        j.send("<presence to='romeo@localhost/orchard'/>").await;
        assert_eq!(
            nurse.recv(),
            [
                "<presence to='nurse@localhost' from='juliet@localhost/balcony'>\
              <show>chat</show></presence>"
            ]
        );
        assert_eq!(
            r.recv(),
            ["<presence to='romeo@localhost/orchard' from='juliet@localhost/balcony'/>"]
        );
        // Directed unavailable to Romeo: he is no longer tracked.
        j.send("<presence type='unavailable' to='romeo@localhost/orchard'/>")
            .await;
        r.recv();
        // The session ends: the nurse learns Juliet is gone; Romeo was told already.
        j.close().await;
        assert_eq!(
            nurse.recv(),
            [
                "<presence type='unavailable' from='juliet@localhost/balcony' \
              to='nurse@localhost'/>"
            ]
        );
        assert!(r.recv().is_empty());
    }

    #[tokio::test]
    async fn rfc6121_4_6_directed_presence_hears_updates() {
        let env = Env::new(&[J, "nurse@localhost"]).await;
        let j = env.online(JB).await;
        let mut nurse = env.online("nurse@localhost/kitchen").await;
        j.send("<presence to='nurse@localhost'/>").await;
        nurse.recv();
        j.send("<presence><show>xa</show></presence>").await;
        assert_eq!(
            nurse.recv(),
            [
                "<presence from='juliet@localhost/balcony' to='nurse@localhost'>\
              <show>xa</show></presence>"
            ]
        );
        j.send("<presence type='unavailable'/>").await;
        assert_eq!(
            nurse.recv(),
            [
                "<presence type='unavailable' from='juliet@localhost/balcony' \
              to='nurse@localhost'/>"
            ]
        );
        // Told once: closing afterwards sends nothing more.
        j.close().await;
        assert!(nurse.recv().is_empty());
    }

    #[tokio::test]
    async fn rfc6121_4_7_2_3_priority_is_clamped() {
        let env = Env::new(&[J]).await;
        let j = env.bind(JB).await;
        j.send("<presence><priority>300</priority></presence>")
            .await;
        assert_eq!(j.session.presence().priority, 127);
        j.send("<presence><priority>-129</priority></presence>")
            .await;
        assert_eq!(j.session.presence().priority, -128);
        j.send("<presence><priority>high</priority></presence>")
            .await;
        assert_eq!(j.session.presence().priority, 0);
    }

    #[tokio::test]
    async fn rfc6121_4_7_1_presence_errors_go_to_full_jids_only() {
        let env = Env::new(&[J, R]).await;
        let mut j = env.online(JB).await;
        let r = env.online(RO).await;
        r.send("<presence type='error' to='juliet@localhost'/>")
            .await;
        assert!(j.recv().is_empty());
        r.send("<presence type='error' to='juliet@localhost/balcony'/>")
            .await;
        assert_eq!(
            j.recv(),
            ["<presence type='error' to='juliet@localhost/balcony' \
              from='romeo@localhost/orchard'/>"]
        );
    }

    #[tokio::test]
    async fn rfc6121_8_5_1_subscription_to_a_missing_account() {
        let env = Env::new(&[J]).await;
        let mut j = env.online(JB).await;
        j.send("<presence type='subscribe' to='ghost@localhost'/>")
            .await;
        assert_eq!(
            j.recv(),
            [
                push(
                    JB,
                    1,
                    "<item jid='ghost@localhost' subscription='none' ask='subscribe'/>"
                ),
                "<presence type='unsubscribed' from='ghost@localhost' to='juliet@localhost'/>"
                    .to_owned(),
                push(JB, 2, "<item jid='ghost@localhost' subscription='none'/>"),
            ]
        );
    }

    #[tokio::test]
    async fn rfc6121_3_1_2_subscription_to_self_is_ignored() {
        let env = Env::new(&[J]).await;
        let mut j = env.online(JB).await;
        j.send("<presence type='subscribe' to='juliet@localhost'/>")
            .await;
        assert!(j.recv().is_empty());
        assert!(roster_of(&env, J).await.is_empty());
    }

    /// How many available presences from `from` carrying `<status>status</status>` are in `got`.
    fn available_from(got: &[String], from: &str, status: &str) -> usize {
        got.iter()
            .filter_map(|x| parse_stanza(x))
            .filter(|p| {
                p.name == "presence"
                    && p.attr("type").is_none()
                    && p.attr("from") == Some(from)
                    && p.child("status", NS_CLIENT).map(Element::text).as_deref() == Some(status)
            })
            .count()
    }

    /// Benchmark M4: contacts, and resources of one account, that send initial presence at the
    /// same time must each get every other one's available presence exactly once, whether it
    /// comes as a broadcast or as a probe answer (§4.2.2 requires both paths; only one may
    /// deliver). Many rounds on two worker threads, so that the storage awaits interleave.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rfc6121_4_2_concurrent_initial_presence_arrives_once() {
        let (env, j, r) = lovers().await;
        j.close().await;
        r.close().await;
        const HALL: &str = "romeo@localhost/hall";
        let jids = [JB, RO, HALL];
        for round in 0..50 {
            let mut clients = Vec::new();
            for jid in jids {
                let mut c = env.bind(jid).await;
                c.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
                    .await;
                c.recv();
                clients.push(c);
            }
            let status = format!("round {round}");
            let tasks: Vec<_> = clients
                .into_iter()
                .map(|c| {
                    let presence = format!("<presence><status>{status}</status></presence>");
                    tokio::spawn(async move {
                        c.send(&presence).await;
                        c
                    })
                })
                .collect();
            let mut clients = Vec::new();
            for t in tasks {
                clients.push(t.await.expect("the login task"));
            }
            for c in &mut clients {
                let me = c.session.jid.to_string();
                let got = c.recv();
                // Everyone sees everyone here: Juliet and Romeo are mutual contacts, and an
                // account is subscribed to its own presence (itself included).
                for from in jids {
                    let n = available_from(&got, from, &status);
                    assert_eq!(n, 1, "{status}: {me} got {from} {n} times: {got:#?}");
                }
            }
            for c in &clients {
                c.close().await;
            }
        }
    }

    /// M4 in miniature: a ring of accounts, each with mutual subscriptions to its neighbours,
    /// log in at once with random small delays on two worker threads. Every session must get
    /// every contact's (and its own) initial presence exactly once: nothing lost, nothing twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rfc6121_4_2_login_storm_delivers_each_presence_once() {
        const USERS: usize = 16;
        const NEIGHBOURS: usize = 3;
        let names: Vec<String> = (0..USERS).map(|i| format!("u{i}@localhost")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let env = Env::new(&refs).await;
        let contacts = |i: usize| {
            (1..=NEIGHBOURS)
                .flat_map(move |d| [(i + d) % USERS, (i + USERS - d) % USERS])
                .collect::<Vec<_>>()
        };
        for i in 0..USERS {
            for c in contacts(i) {
                let item = RosterItem {
                    jid: names[c].clone(),
                    subscription: Subscription::Both,
                    ..RosterItem::default()
                };
                env.server
                    .store
                    .put_roster_item(&names[i], &item)
                    .await
                    .expect("roster item");
            }
        }
        for round in 0..20 {
            let mut clients = Vec::new();
            for name in &names {
                let mut c = env.bind(&format!("{name}/r")).await;
                c.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
                    .await;
                c.recv();
                clients.push(c);
            }
            let status = format!("round {round}");
            let tasks: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let presence = format!("<presence><status>{status}</status></presence>");
                    // Spread over 2 ms in an order that changes every round.
                    let delay = ((i * 7919 + round * 104_729) % 2000) as u64;
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_micros(delay)).await;
                        c.send(&presence).await;
                        c
                    })
                })
                .collect();
            let mut clients = Vec::new();
            for t in tasks {
                clients.push(t.await.expect("the login task"));
            }
            for (i, c) in clients.iter_mut().enumerate() {
                let got = c.recv();
                for k in contacts(i).into_iter().chain([i]) {
                    let from = format!("{}/r", names[k]);
                    let n = available_from(&got, &from, &status);
                    assert_eq!(n, 1, "{status}: {} got {from} {n} times", names[i]);
                }
            }
            for c in &clients {
                c.close().await;
            }
        }
    }

    /// Broadcasts to local contacts are delivered per session by the presence module, but
    /// still pass the inbound hooks: XEP-0191 blocking filters them both ways, and a resource
    /// with negative priority still gets them (RFC 6121 §4.7.2.3 limits messages only).
    #[tokio::test]
    async fn broadcasts_pass_blocking_and_reach_negative_priority() {
        use crate::testing::{Client, server};
        let server = server(vec![
            Arc::new(crate::blocking::Blocking),
            Arc::new(roster::Roster),
            Arc::new(Presence),
        ])
        .await;
        const N: &str = "nurse@localhost";
        for (user, contact) in [(J, R), (R, J), (J, N), (N, J)] {
            let item = RosterItem {
                jid: contact.into(),
                subscription: Subscription::Both,
                ..RosterItem::default()
            };
            server
                .store
                .put_roster_item(user, &item)
                .await
                .expect("roster item");
        }
        let mut j = Client::bind(&server, JB).await;
        j.send(
            "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>\
             <item jid='romeo@localhost'/></block></iq>",
        )
        .await;
        while j.recv().is_some() {}
        j.send("<presence/>").await;
        j.expect("<presence from='juliet@localhost/balcony' to='juliet@localhost'/>");
        // Probe answers: the nurse is offline; Romeo's answer is dropped like all he sends.
        j.expect(
            "<presence type='unavailable' from='nurse@localhost' to='juliet@localhost/balcony'/>",
        );
        j.silent();

        // Romeo's broadcast and his probe of Juliet are both refused by her blocklist.
        let mut r = Client::bind(&server, RO).await;
        r.send("<presence/>").await;
        r.expect("<presence from='romeo@localhost/orchard' to='romeo@localhost'/>");
        r.silent();
        j.silent();

        // The nurse, with negative priority, is told and hears Juliet (by the probe answer).
        let mut n = Client::bind(&server, "nurse@localhost/kitchen").await;
        n.send("<presence><priority>-1</priority></presence>").await;
        n.expect(
            "<presence from='nurse@localhost/kitchen' to='nurse@localhost'>\
             <priority>-1</priority></presence>",
        );
        n.expect("<presence from='juliet@localhost/balcony' to='nurse@localhost/kitchen'/>");
        n.silent();
        j.expect(
            "<presence from='nurse@localhost/kitchen' to='juliet@localhost'>\
             <priority>-1</priority></presence>",
        );
        j.silent();

        // Juliet's update: to herself and the nurse, not to Romeo whom she blocks.
        j.send("<presence><show>away</show></presence>").await;
        let away = "<presence from='juliet@localhost/balcony' to='{to}'><show>away</show>\
                    </presence>";
        j.expect(&away.replace("{to}", J));
        n.expect(&away.replace("{to}", N));
        r.silent();
        j.silent();
        n.silent();
    }

    fn item(sub: Subscription, ask: bool, pending_in: bool, approved: bool) -> RosterItem {
        RosterItem {
            jid: R.into(),
            subscription: sub,
            ask,
            pending_in: pending_in.then(|| "<presence/>".to_owned()),
            approved,
            ..RosterItem::default()
        }
    }

    /// The states of Appendix A.1, as (subscription, pending out, pending in).
    const STATES: [(Subscription, bool, bool); 9] = [
        (Subscription::None, false, false),
        (Subscription::None, true, false),
        (Subscription::None, false, true),
        (Subscription::None, true, true),
        (Subscription::To, false, false),
        (Subscription::To, false, true),
        (Subscription::From, false, false),
        (Subscription::From, true, false),
        (Subscription::Both, false, false),
    ];

    fn state(i: &RosterItem) -> (Subscription, bool, bool) {
        (i.subscription, i.ask, i.pending_in.is_some())
    }

    #[test]
    fn rfc6121_a_2_outbound_state_tables() {
        use Subscription::*;
        // A.2.1 subscribe, A.2.2 unsubscribe: expected new states in STATES order.
        let subscribe = [
            (None, true, false),
            (None, true, false),
            (None, true, true),
            (None, true, true),
            (To, false, false),
            (To, false, true),
            (From, true, false),
            (From, true, false),
            (Both, false, false),
        ];
        let unsubscribe = [
            (None, false, false),
            (None, false, false),
            (None, false, true),
            (None, false, true),
            (None, false, false),
            (None, false, true),
            (From, false, false),
            (From, false, false),
            (From, false, false),
        ];
        // A.2.3 subscribed, A.2.4 unsubscribed.
        let subscribed = [
            (None, false, false),
            (None, true, false),
            (From, false, false),
            (From, true, false),
            (To, false, false),
            (Both, false, false),
            (From, false, false),
            (From, true, false),
            (Both, false, false),
        ];
        let unsubscribed = [
            (None, false, false),
            (None, true, false),
            (None, false, false),
            (None, true, false),
            (To, false, false),
            (To, false, false),
            (None, false, false),
            (None, true, false),
            (To, false, false),
        ];
        for (i, &(sub, ask, pin)) in STATES.iter().enumerate() {
            let mut it = item(sub, ask, pin, false);
            out_subscribe(&mut it);
            assert_eq!(state(&it), subscribe[i], "subscribe from {:?}", STATES[i]);
            let mut it = item(sub, ask, pin, false);
            out_unsubscribe(&mut it);
            assert_eq!(
                state(&it),
                unsubscribe[i],
                "unsubscribe from {:?}",
                STATES[i]
            );
            let mut it = item(sub, ask, pin, false);
            let outcome = out_subscribed(&mut it);
            assert_eq!(state(&it), subscribed[i], "subscribed from {:?}", STATES[i]);
            // Pre-approval exactly where there is neither From nor a request (§3.4.2).
            assert_eq!(
                it.approved,
                matches!(outcome, Approval::PreApproved { .. }),
                "approved from {:?}",
                STATES[i]
            );
            assert_eq!(it.approved, matches!(sub, None | To) && !pin);
            let mut it = item(sub, ask, pin, false);
            out_unsubscribed(&mut it);
            assert_eq!(
                state(&it),
                unsubscribed[i],
                "unsubscribed from {:?}",
                STATES[i]
            );
        }
    }

    #[test]
    fn rfc6121_a_3_inbound_state_tables() {
        use Subscription::*;
        // A.3.1 subscribe (with whether it is delivered), A.3.2 subscribed, A.3.3
        // unsubscribe, A.3.4 unsubscribed; each with whether the contact hears of it.
        let subscribe = [
            ((None, false, true), true),
            ((None, true, true), true),
            ((None, false, true), false),
            ((None, true, true), false),
            ((To, false, true), true),
            ((To, false, true), false),
            ((From, false, false), false),
            ((From, true, false), false),
            ((Both, false, false), false),
        ];
        let subscribed = [
            ((None, false, false), false),
            ((To, false, false), true),
            ((None, false, true), false),
            ((To, false, true), true),
            ((To, false, false), false),
            ((To, false, true), false),
            ((From, false, false), false),
            ((Both, false, false), true),
            ((Both, false, false), false),
        ];
        let unsubscribe = [
            ((None, false, false), false),
            ((None, true, false), false),
            ((None, false, false), true),
            ((None, true, false), true),
            ((To, false, false), false),
            ((To, false, false), true),
            ((None, false, false), true),
            ((None, true, false), true),
            ((To, false, false), true),
        ];
        let unsubscribed = [
            ((None, false, false), false),
            ((None, false, false), true),
            ((None, false, true), false),
            ((None, false, true), true),
            ((None, false, false), true),
            ((None, false, true), true),
            ((From, false, false), false),
            ((From, false, false), true),
            ((From, false, false), true),
        ];
        for (i, &(sub, ask, pin)) in STATES.iter().enumerate() {
            let mut it = item(sub, ask, pin, false);
            let r = in_subscribe(&mut it, "<presence/>".into());
            assert_eq!(
                (state(&it), r == Request::Pending),
                subscribe[i],
                "subscribe in {:?}",
                STATES[i]
            );
            let mut it = item(sub, ask, pin, false);
            let r = in_subscribed(&mut it);
            assert_eq!(
                (state(&it), r),
                subscribed[i],
                "subscribed in {:?}",
                STATES[i]
            );
            let mut it = item(sub, ask, pin, false);
            let (r, _) = in_unsubscribe(&mut it);
            assert_eq!(
                (state(&it), r),
                unsubscribe[i],
                "unsubscribe in {:?}",
                STATES[i]
            );
            let mut it = item(sub, ask, pin, false);
            let r = in_unsubscribed(&mut it);
            assert_eq!(
                (state(&it), r),
                unsubscribed[i],
                "unsubscribed in {:?}",
                STATES[i]
            );
        }
        // §3.4.2: a pre-approved request is answered at once.
        let mut it = item(None, true, false, true);
        assert_eq!(in_subscribe(&mut it, String::new()), Request::PreApproved);
        assert_eq!((state(&it), it.approved), ((From, true, false), false));
        let mut it = item(To, false, false, true);
        assert_eq!(in_subscribe(&mut it, String::new()), Request::PreApproved);
        assert_eq!(state(&it), (Both, false, false));
    }

    #[test]
    fn stored_requests_parse_back() {
        let req = subscription_stanza("subscribe", J, R)
            .with_child(Element::new("status", NS_CLIENT).with_text("hi <3"));
        let xml = req.to_xml();
        assert_eq!(parse_stanza(&xml), Some(req));
        let bare = BareJid::new(R).expect("jid");
        assert_eq!(
            stored_request("<not xml", J, &bare),
            subscription_stanza("subscribe", J, R)
        );
    }
}
