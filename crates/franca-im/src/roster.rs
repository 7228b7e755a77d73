//! Roster management, RFC 6121 §2: roster get (§2.1.3, §2.2), roster set to add or update an
//! item (§2.3, §2.4) with the error cases of §2.3.3, removal (§2.5) with the subscription
//! cancellations it implies, roster pushes to interested resources (§2.1.6), roster versioning
//! (§2.6, advertised as `urn:xmpp:features:rosterver`) and the `approved` flag of subscription
//! pre-approval (§2.1.2.1, §3.4, advertised as `urn:xmpp:features:pre-approval`).
//!
//! The subscription state itself changes in [`crate::presence`]; this module owns the roster's
//! wire form and the pushes both modules send.

use crate::presence;
use franca_core::{IqRequest, IqResult, IqTarget, Module, Server, Session};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_CLIENT, NS_PREAPPROVAL, NS_ROSTER, NS_ROSTERVER};
use franca_store::{RosterItem, Subscription};
use franca_xml::Element;
use jid::{BareJid, Jid};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest accepted `name` attribute, in bytes (the "server-configured limit" of §2.3.3).
pub const MAX_NAME_BYTES: usize = 1023;
/// Longest accepted `<group/>` text, in bytes (§2.3.3).
pub const MAX_GROUP_BYTES: usize = 1023;
/// Most groups on one item: the stanza size limit alone would allow thousands.
pub const MAX_GROUPS: usize = 100;
/// Most items (hidden pending-in records included) one roster may hold, so that neither the
/// user nor strangers sending subscription requests can grow storage without bound.
pub const MAX_ITEMS: usize = 10_000;

/// The `jabber:iq:roster` module.
pub struct Roster;

#[async_trait::async_trait]
impl Module for Roster {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Account, NS_ROSTER)]
    }

    fn stream_features(&self) -> Vec<Element> {
        vec![
            Element::new("ver", NS_ROSTERVER),
            Element::new("sub", NS_PREAPPROVAL),
        ]
    }

    /// A deleted account cancels every subscription, as if the user removed each item (§2.5),
    /// so contacts' rosters do not keep a subscription to an account that no longer exists.
    async fn user_removed(&self, server: &Arc<Server>, user: &BareJid) {
        let items = match server.store.roster(user.as_str()).await {
            Ok((_, items)) => items,
            Err(e) => {
                tracing::warn!(%user, "cannot read the roster of a removed account: {e}");
                return;
            }
        };
        for item in items {
            if let Err(e) = remove(server, user, item).await {
                tracing::warn!(%user, "cannot cancel a subscription of a removed account: {e:?}");
            }
        }
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        // §2.3.3: only the account itself may read or change its roster.
        if !req.from_self() {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let Some(query) = req.payload().filter(|p| p.is("query", NS_ROSTER)) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        let user = req.to.to_bare();
        if req.is_set() {
            roster_set(server, &user, query).await
        } else {
            let session = origin_session(server, &req);
            roster_get(server, &user, session.as_ref(), query).await
        }
    }
}

/// The session that sent the request. The router does not pass the origin for IQs addressed to
/// the account, so it is found again from the stamped full JID.
fn origin_session(server: &Server, req: &IqRequest<'_>) -> Option<Arc<Session>> {
    if let Some(s) = req.origin {
        return Some(s.clone());
    }
    match req.from.try_as_full() {
        Ok(full) => server.sessions.get(full),
        Err(_) => None,
    }
}

fn internal(e: franca_store::StoreError) -> StanzaError {
    tracing::error!("roster storage error: {e}");
    StanzaError::new(Cond::InternalServerError)
}

/// §2.1.3 roster get, with §2.6.3 versioning: a client whose cached version is current gets an
/// empty result and no items.
async fn roster_get(
    server: &Arc<Server>,
    user: &BareJid,
    session: Option<&Arc<Session>>,
    query: &Element,
) -> IqResult {
    // §2.1.6: a resource that requested the roster is "interested" and gets pushes from now on.
    if let Some(s) = session {
        s.presence().interested = true;
    }
    let roster = server
        .store
        .roster_shared(user.as_str())
        .await
        .map_err(internal)?;
    let ver = roster.version.to_string();
    if query.attr("ver") == Some(ver.as_str()) {
        return Ok(None);
    }
    let mut result = Element::new("query", NS_ROSTER).with_attr("ver", ver);
    // Hidden items only record a pending-in request; the contact is not in the roster until the
    // user approves or adds it (§3.1.3).
    for item in roster.items.iter().filter(|i| !i.hidden) {
        result.push(item_element(item));
    }
    Ok(Some(result))
}

/// What a roster set asks for, once validated (§2.3.3).
struct ItemSet {
    jid: BareJid,
    remove: bool,
    name: Option<String>,
    groups: Vec<String>,
}

/// Why a roster set is refused: the condition and a text for the user. Kept small (rather
/// than a whole [`StanzaError`]) so the happy path does not move a large `Result` around.
pub(crate) type Refusal = (Cond, &'static str);

pub(crate) fn refusal(r: Refusal) -> StanzaError {
    StanzaError::new(r.0).with_text(r.1)
}

/// Validate the single `<item/>` of a roster set, in the order of §2.3.3.
fn parse_set(user: &BareJid, query: &Element) -> Result<ItemSet, Refusal> {
    let bad = |text| Err((Cond::BadRequest, text));
    let not_acceptable = |text| Err((Cond::NotAcceptable, text));
    let mut items = query.elements().filter(|e| e.is("item", NS_ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return bad("a roster set carries exactly one item");
    };
    let Some(jid) = item.attr("jid") else {
        return bad("the item has no jid");
    };
    let Ok(jid) = Jid::new(jid) else {
        return Err((Cond::JidMalformed, "the item's jid is not a valid JID"));
    };
    // Roster items, and the subscriptions they carry, are between bare JIDs (§2.1.1).
    let Err(jid) = jid.try_into_full() else {
        return bad("roster items are bare JIDs");
    };
    if jid == *user {
        return Err((Cond::NotAllowed, "the roster cannot hold its owner"));
    }
    // §2.1.2.5: every subscription value other than "remove" is ignored, as are 'ask' and
    // 'approved' (§2.1.2.1, §2.1.2.2): state changes only through presence stanzas.
    if item.attr("subscription") == Some("remove") {
        return Ok(ItemSet {
            jid,
            remove: true,
            name: None,
            groups: Vec::new(),
        });
    }
    // An empty name is read as no name: clients send name='' to clear it.
    let name = item.attr("name").filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > MAX_NAME_BYTES) {
        return not_acceptable("the name is too long");
    }
    let mut groups = Vec::new();
    let mut seen = HashSet::new();
    for g in item.elements().filter(|e| e.is("group", NS_ROSTER)) {
        let text = g.text();
        if text.is_empty() {
            return not_acceptable("a group name is empty");
        }
        if text.len() > MAX_GROUP_BYTES {
            return not_acceptable("a group name is too long");
        }
        if !seen.insert(text.clone()) {
            return bad("the item names a group twice");
        }
        groups.push(text);
    }
    if groups.len() > MAX_GROUPS {
        return not_acceptable("too many groups");
    }
    Ok(ItemSet {
        jid,
        remove: false,
        name: name.map(str::to_owned),
        groups,
    })
}

/// §2.3 add and §2.4 update; §2.5 remove.
async fn roster_set(server: &Arc<Server>, user: &BareJid, query: &Element) -> IqResult {
    let set = parse_set(user, query).map_err(refusal)?;
    let store = &server.store;
    let existing = store
        .roster_item(user.as_str(), set.jid.as_str())
        .await
        .map_err(internal)?;
    if set.remove {
        let Some(item) = existing else {
            return Err(StanzaError::new(Cond::ItemNotFound)); // §2.5.3
        };
        return remove(server, user, item).await;
    }
    let mut item = match existing {
        Some(item) => item,
        None => {
            if !has_room(server, user).await.map_err(internal)? {
                return Err(refusal(ROSTER_FULL));
            }
            RosterItem {
                jid: set.jid.as_str().to_owned(),
                ..RosterItem::default()
            }
        }
    };
    item.name = set.name;
    item.groups = set.groups;
    // Adding a contact that only had a pending request makes it a real roster item.
    item.hidden = false;
    let version = store
        .put_roster_item(user.as_str(), &item)
        .await
        .map_err(internal)?;
    push(server, user, &item, version).await;
    Ok(None)
}

/// The answer to a new item in a full roster.
pub(crate) const ROSTER_FULL: Refusal = (Cond::PolicyViolation, "the roster is full");

/// Whether `user`'s roster can take one more item (see [`MAX_ITEMS`]).
pub(crate) async fn has_room(
    server: &Server,
    user: &BareJid,
) -> Result<bool, franca_store::StoreError> {
    let count = server.store.roster_count(user.as_str()).await?;
    Ok((count as usize) < MAX_ITEMS)
}

/// §2.5.2: cancel the subscriptions in both directions as the item's state requires, then
/// delete the item and push the removal.
async fn remove(server: &Arc<Server>, user: &BareJid, item: RosterItem) -> IqResult {
    let contact = item.jid.clone();
    // Cancel the user's subscription to the contact, or the request for one (Appendix A.2.2).
    if matches!(item.subscription, Subscription::To | Subscription::Both) || item.ask {
        let stanza = presence::subscription_stanza("unsubscribe", user.as_str(), &contact);
        server.route(stanza).await;
    }
    // Cancel the contact's subscription to the user (§3.2.2: unavailable first, while the
    // contact is still subscribed), or decline its pending request.
    let from = matches!(item.subscription, Subscription::From | Subscription::Both);
    if from {
        presence::send_unavailable(server, user, &contact).await;
    }
    if from || item.pending_in.is_some() {
        let stanza = presence::subscription_stanza("unsubscribed", user.as_str(), &contact);
        server.route(stanza).await;
    }
    let version = server
        .store
        .remove_roster_item(user.as_str(), &contact)
        .await
        .map_err(internal)?;
    if !item.hidden {
        push_removed(server, user, &contact, version).await;
    }
    Ok(None)
}

/// The `<item/>` of a roster result or push (§2.1.2).
pub fn item_element(item: &RosterItem) -> Element {
    let mut el = Element::new("item", NS_ROSTER).with_attr("jid", item.jid.clone());
    if let Some(name) = &item.name {
        el.set_attr("name", name.clone());
    }
    el.set_attr("subscription", item.subscription.as_str());
    // 'ask' marks pending-out; it is meaningless once the user is subscribed (§2.1.2.2).
    if item.ask && matches!(item.subscription, Subscription::None | Subscription::From) {
        el.set_attr("ask", "subscribe");
    }
    // A pre-approval is moot once the contact is subscribed (§3.4).
    if item.approved && matches!(item.subscription, Subscription::None | Subscription::To) {
        el.set_attr("approved", "true");
    }
    for g in &item.groups {
        el.push(Element::new("group", NS_ROSTER).with_text(g.clone()));
    }
    el
}

/// The user's interested resources (§2.1.6): those that requested the roster.
pub fn interested(server: &Server, user: &BareJid) -> Vec<Arc<Session>> {
    server
        .sessions
        .resources(user)
        .into_iter()
        .filter(|s| s.presence().interested)
        .collect()
}

static PUSH_ID: AtomicU64 = AtomicU64::new(1);

fn push_iq(to: &str, item: Element, version: i64) -> Element {
    let id = format!("push{}", PUSH_ID.fetch_add(1, Ordering::Relaxed));
    // §2.1.6: a push has no 'from' (it comes from the account itself), so clients accept it.
    Element::new("iq", NS_CLIENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("to", to)
        .with_child(
            Element::new("query", NS_ROSTER)
                .with_attr("ver", version.to_string())
                .with_child(item),
        )
}

fn push_element(server: &Server, user: &BareJid, item: Element, version: i64) {
    for s in interested(server, user) {
        s.send(&push_iq(s.jid.as_str(), item.clone(), version));
    }
}

/// Send a roster push (§2.1.6) for `item`, now at roster `version`, to every interested
/// resource of `user`. Hidden items are not part of the roster and are never pushed.
pub async fn push(server: &Arc<Server>, user: &BareJid, item: &RosterItem, version: i64) {
    if item.hidden {
        return;
    }
    push_element(server, user, item_element(item), version);
}

/// Push the removal of `contact` (§2.5.2: `subscription='remove'`) at roster `version`.
pub async fn push_removed(server: &Arc<Server>, user: &BareJid, contact: &str, version: i64) {
    let item = Element::new("item", NS_ROSTER)
        .with_attr("jid", contact)
        .with_attr("subscription", "remove");
    push_element(server, user, item, version);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::roster_kit::{Env, J, JB, R, RO, lovers, push};

    const SET_NURSE: &str = "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'>\
                             <item jid='nurse@localhost' name='Nurse'><group>Servants</group>\
                             </item></query></iq>";
    const NURSE: &str = "<item jid='nurse@localhost' name='Nurse' subscription='none'>\
                         <group>Servants</group></item>";

    fn result(id: &str, user: &str, to: &str) -> String {
        format!("<iq type='result' id='{id}' from='{user}' to='{to}'/>")
    }

    #[tokio::test]
    async fn rfc6121_2_1_6_roster_push_to_interested_resources_only() {
        let env = Env::new(&[J]).await;
        let mut balcony = env.online(JB).await;
        // Available but has not asked for the roster: not interested (§2.1.6).
        let mut chamber = env.bind("juliet@localhost/chamber").await;
        chamber.send("<presence/>").await;
        chamber.recv();
        balcony.recv();

        // §2.3.2: the push goes to every interested resource, the requester included, and
        // the requester gets its result.
        balcony.send(SET_NURSE).await;
        assert_eq!(balcony.recv(), [push(JB, 1, NURSE), result("s1", J, JB)]);
        assert!(chamber.recv().is_empty());

        // Once it has asked, it is interested.
        chamber
            .send("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        assert_eq!(
            chamber.recv(),
            [format!(
                "<iq type='result' id='g' from='{J}' to='juliet@localhost/chamber'>\
                 <query xmlns='jabber:iq:roster' ver='1'>{NURSE}</query></iq>"
            )]
        );
        // §2.4: an update replaces name and groups.
        balcony
            .send(
                "<iq type='set' id='s2'><query xmlns='jabber:iq:roster'>\
                 <item jid='nurse@localhost'><group>Friends</group><group>Family</group>\
                 </item></query></iq>",
            )
            .await;
        let item = "<item jid='nurse@localhost' subscription='none'><group>Friends</group>\
                    <group>Family</group></item>";
        assert_eq!(chamber.recv(), [push("juliet@localhost/chamber", 2, item)]);
        assert_eq!(balcony.recv(), [push(JB, 2, item), result("s2", J, JB)]);
    }

    #[tokio::test]
    async fn rfc6121_2_6_roster_versioning() {
        let env = Env::new(&[J]).await;
        let mut j = env.bind(JB).await;
        // §2.6.3: an empty 'ver' means "no cache": the whole roster, with its version.
        j.send("<iq type='get' id='g1'><query xmlns='jabber:iq:roster' ver=''/></iq>")
            .await;
        assert_eq!(
            j.recv(),
            [
                "<iq type='result' id='g1' from='juliet@localhost' to='juliet@localhost/balcony'>\
              <query xmlns='jabber:iq:roster' ver='0'/></iq>"
            ]
        );
        j.send(SET_NURSE).await;
        assert_eq!(j.recv(), [push(JB, 1, NURSE), result("s1", J, JB)]);
        // Current: an empty result, no items.
        j.send("<iq type='get' id='g2'><query xmlns='jabber:iq:roster' ver='1'/></iq>")
            .await;
        assert_eq!(j.recv(), [result("g2", J, JB)]);
        // Stale: the whole roster again.
        j.send("<iq type='get' id='g3'><query xmlns='jabber:iq:roster' ver='0'/></iq>")
            .await;
        assert_eq!(
            j.recv(),
            [format!(
                "<iq type='result' id='g3' from='{J}' to='{JB}'>\
                 <query xmlns='jabber:iq:roster' ver='1'>{NURSE}</query></iq>"
            )]
        );
        // A removal is a change too (§2.6.2), pushed with the new version.
        j.send(
            "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>\
             <item jid='nurse@localhost' subscription='remove'/></query></iq>",
        )
        .await;
        assert_eq!(
            j.recv(),
            [
                push(JB, 2, "<item jid='nurse@localhost' subscription='remove'/>"),
                result("rm", J, JB)
            ]
        );
    }

    #[test]
    fn rfc6121_2_6_1_and_3_4_1_stream_features() {
        let features: Vec<String> = Roster
            .stream_features()
            .iter()
            .map(Element::to_xml)
            .collect();
        assert_eq!(
            features,
            [
                "<ver xmlns='urn:xmpp:features:rosterver'/>",
                "<sub xmlns='urn:xmpp:features:pre-approval'/>"
            ]
        );
    }

    async fn set_error(env: &Env, body: &str) -> String {
        let mut j = env.bind(JB).await;
        j.send(&format!(
            "<iq type='set' id='e'><query xmlns='jabber:iq:roster'>{body}</query></iq>"
        ))
        .await;
        let got = j.recv();
        j.close().await;
        assert_eq!(got.len(), 1, "one answer: {got:?}");
        let error = crate::presence::parse_stanza(&got[0]).expect("reply parses");
        assert_eq!(error.attr("type"), Some("error"), "{got:?}");
        let err = StanzaError::from_element(&error).expect("an error element");
        err.condition.name().to_owned()
    }

    #[tokio::test]
    async fn rfc6121_2_3_3_roster_set_errors() {
        let env = Env::new(&[J, R]).await;
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let cases = [
            (
                "<item jid='a@localhost'/><item jid='b@localhost'/>",
                "bad-request",
            ),
            ("", "bad-request"),
            ("<item name='no jid'/>", "bad-request"),
            (
                "<item jid='a@localhost'><group>G</group><group>G</group></item>",
                "bad-request",
            ),
            ("<item jid='a@localhost'><group/></item>", "not-acceptable"),
            (
                &format!("<item jid='a@localhost' name='{long}'/>"),
                "not-acceptable",
            ),
            (
                &format!("<item jid='a@localhost'><group>{long}</group></item>"),
                "not-acceptable",
            ),
            ("<item jid='juliet@localhost'/>", "not-allowed"),
            ("<item jid='a@localhost/res'/>", "bad-request"),
            ("<item jid='@localhost'/>", "jid-malformed"),
            (
                "<item jid='nobody@localhost' subscription='remove'/>",
                "item-not-found",
            ),
        ];
        for (body, condition) in cases {
            assert_eq!(set_error(&env, body).await, condition, "for {body}");
        }
        // Nothing was stored by any of them.
        assert!(
            env.server
                .store
                .roster(J)
                .await
                .expect("roster")
                .1
                .is_empty()
        );

        // §2.3.3: only the account itself may change its roster.
        let mut j = env.bind(JB).await;
        j.send(
            "<iq type='set' id='x' to='romeo@localhost'><query xmlns='jabber:iq:roster'>\
             <item jid='a@localhost'/></query></iq>",
        )
        .await;
        let got = j.recv();
        assert!(got[0].contains("<forbidden xmlns="), "{got:?}");
    }

    #[tokio::test]
    async fn rfc6121_2_1_2_set_ignores_subscription_ask_and_approved() {
        let env = Env::new(&[J]).await;
        let mut j = env.online(JB).await;
        j.send(
            "<iq type='set' id='s'><query xmlns='jabber:iq:roster'>\
             <item jid='romeo@localhost' subscription='both' ask='subscribe' approved='true' \
             name=''/></query></iq>",
        )
        .await;
        assert_eq!(
            j.recv(),
            [
                push(JB, 1, "<item jid='romeo@localhost' subscription='none'/>"),
                result("s", J, JB)
            ]
        );
    }

    #[tokio::test]
    async fn rfc6121_2_1_2_ask_and_approved_in_results() {
        let env = Env::new(&[J, R, "nurse@localhost"]).await;
        let mut j = env.online(JB).await;
        j.send("<presence type='subscribe' to='romeo@localhost'/>")
            .await;
        j.send("<presence type='subscribed' to='nurse@localhost'/>")
            .await;
        j.recv();
        j.send("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        assert_eq!(
            j.recv(),
            [format!(
                "<iq type='result' id='g' from='{J}' to='{JB}'>\
                 <query xmlns='jabber:iq:roster' ver='2'>\
                 <item jid='nurse@localhost' subscription='none' approved='true'/>\
                 <item jid='romeo@localhost' subscription='none' ask='subscribe'/>\
                 </query></iq>"
            )]
        );
    }

    #[tokio::test]
    async fn rfc6121_2_5_removal_cancels_both_subscriptions() {
        let (env, mut j, mut r) = lovers().await;
        j.send(
            "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>\
             <item jid='romeo@localhost' subscription='remove'/></query></iq>",
        )
        .await;
        // §2.5.2: 'unsubscribe' (Romeo's server then sends his unavailable presence), then
        // Juliet's unavailable presence and 'unsubscribed', then the push and the result.
        assert_eq!(
            j.recv(),
            [
                "<presence type='unavailable' from='romeo@localhost/orchard' \
                 to='juliet@localhost'/>"
                    .to_owned(),
                push(JB, 5, "<item jid='romeo@localhost' subscription='remove'/>"),
                result("rm", J, JB),
            ]
        );
        assert_eq!(
            r.recv(),
            [
                "<presence type='unsubscribe' from='juliet@localhost' to='romeo@localhost'/>"
                    .to_owned(),
                push(RO, 5, "<item jid='juliet@localhost' subscription='to'/>"),
                "<presence type='unavailable' from='juliet@localhost/balcony' \
                 to='romeo@localhost'/>"
                    .to_owned(),
                "<presence type='unsubscribed' from='juliet@localhost' to='romeo@localhost'/>"
                    .to_owned(),
                push(RO, 6, "<item jid='juliet@localhost' subscription='none'/>"),
            ]
        );
        assert!(
            env.server
                .store
                .roster_item(J, R)
                .await
                .expect("item")
                .is_none()
        );
    }

    #[tokio::test]
    async fn removed_account_cancels_its_subscriptions() {
        let (env, _j, mut r) = lovers().await;
        let juliet = BareJid::new(J).expect("jid");
        env.server.remove_user(&juliet).await.expect("remove");
        assert!(!env.server.store.user_exists(J).await.expect("exists"));
        let item = env.server.store.roster_item(R, J).await.expect("item");
        assert_eq!(item.map(|i| i.subscription), Some(Subscription::None));
        let seen = r.recv().join("\n");
        assert!(
            seen.contains("type='unsubscribed' from='juliet@localhost'"),
            "{seen}"
        );
        assert!(
            seen.contains("type='unsubscribe' from='juliet@localhost'"),
            "{seen}"
        );
    }

    #[tokio::test]
    async fn rfc6121_2_5_removal_declines_a_pending_request() {
        let env = Env::new(&[J, R]).await;
        let mut j = env.online(JB).await;
        let mut r = env.online(RO).await;
        j.send("<presence type='subscribe' to='romeo@localhost'/>")
            .await;
        j.recv();
        r.recv();
        r.send(
            "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>\
             <item jid='juliet@localhost' subscription='remove'/></query></iq>",
        )
        .await;
        // The hidden record goes without a push; Juliet's request is declined.
        assert_eq!(r.recv(), [result("rm", R, RO)]);
        assert_eq!(
            j.recv(),
            [
                "<presence type='unsubscribed' from='romeo@localhost' to='juliet@localhost'/>"
                    .to_owned(),
                push(JB, 2, "<item jid='romeo@localhost' subscription='none'/>"),
            ]
        );
        assert!(
            env.server
                .store
                .roster_item(R, J)
                .await
                .expect("item")
                .is_none()
        );
    }

    #[tokio::test]
    async fn rfc6121_3_1_3_adding_a_requester_keeps_the_request() {
        let env = Env::new(&[J, R]).await;
        let mut j = env.online(JB).await;
        let mut r = env.online(RO).await;
        j.send("<presence type='subscribe' to='romeo@localhost'/>")
            .await;
        j.recv();
        r.recv();
        // Romeo adds Juliet to his roster without answering yet: None + Pending In.
        r.send(
            "<iq type='set' id='s'><query xmlns='jabber:iq:roster'>\
             <item jid='juliet@localhost' name='J'/></query></iq>",
        )
        .await;
        assert_eq!(
            r.recv(),
            [
                push(
                    RO,
                    2,
                    "<item jid='juliet@localhost' name='J' subscription='none'/>"
                ),
                result("s", R, RO)
            ]
        );
        // Then approves: the name stays.
        r.send("<presence type='subscribed' to='juliet@localhost'/>")
            .await;
        assert_eq!(
            r.recv(),
            [push(
                RO,
                3,
                "<item jid='juliet@localhost' name='J' subscription='from'/>"
            )]
        );
        assert_eq!(j.recv().len(), 3);
    }
}
