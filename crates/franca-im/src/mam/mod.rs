//! XEP-0313 Message Archive Management for accounts (namespace `urn:xmpp:mam:2`, with the
//! `#extended` fields), XEP-0359 stanza-ids and XEP-0059 paging.
//!
//! Messages are archived as they are routed, both sides: the sender's archive in the
//! `outbound` hook (before routing, so also messages to remote or absent recipients) and the
//! recipient's in the `inbound` hook, which runs once per message whatever happens next —
//! delivery, offline storage, a hibernated session — so a message that waits in offline
//! storage is archived exactly once and its later delivery does not archive it again. The
//! recipient's copy gets `<stanza-id by='user@domain' id='…'/>`, the archive id; stanza-ids
//! claiming to be by the recipient that came from elsewhere are removed first. Which messages
//! count is in [`rules`], ids in [`id`], queries in [`query`] and [`result`], preferences in
//! [`prefs`].
//!
//! A message costs one store write per archive (one statement each side): the two sides are
//! not merged into one write, because they happen at different points of routing (the
//! recipient's filters, such as blocking, decide in between). Stanzas that are not archived
//! cost a few comparisons and no storage.
//!
//! Archives are keyed by an owner JID string, so MUC rooms can reuse the store methods,
//! [`rules::stanza_id`], [`id`] and [`answer_query`] for their own archives. Retention
//! (`mam.retention_days`) is enforced by a task started with the first bound session, which
//! deletes expired messages in batches every hour.

pub mod id;
pub mod prefs;
pub mod query;
pub mod result;
pub mod rules;

use franca_core::util::now_us;
use franca_core::{Flow, IqRequest, IqResult, IqTarget, Module, Server, Session, SessionEvent};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_DATA_FORMS, NS_STANZA_ID};
use franca_store::{ArchivedMessage, Store};
use franca_xml::Element;
use jid::{BareJid, Jid};
use prefs::{Decision, Prefs, PrefsCache};
pub use query::NS_MAM;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub const NS_MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";

/// How often the retention job runs.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);
/// Messages deleted per statement by the retention job.
const EXPIRY_BATCH: u32 = 1000;
/// Hard cap on a page, whatever the configuration says: a page is queued to the session at
/// once, and its outbound queue holds 2048 stanzas.
const MAX_PAGE: u32 = 1000;

pub struct Mam {
    clock: id::Clock,
    prefs: PrefsCache,
    expiry_started: AtomicBool,
}

impl Default for Mam {
    fn default() -> Self {
        Self::new()
    }
}

impl Mam {
    pub fn new() -> Mam {
        Mam {
            clock: id::Clock::default(),
            prefs: PrefsCache::default(),
            expiry_started: AtomicBool::new(false),
        }
    }

    /// The account's preferences, from the cache or the store; `None` = the server default.
    async fn prefs_of(&self, server: &Server, user: &str) -> Option<Arc<Prefs>> {
        if let Some(cached) = self.prefs.get(user) {
            return cached;
        }
        match server.store.archive_prefs(user).await {
            Ok(stored) => {
                let p = stored.map(|p| Arc::new(Prefs::from_stored(&p, server.config.mam.default)));
                self.prefs.put_read(user, p)
            }
            Err(e) => {
                tracing::error!(user, "storage error reading archive preferences: {e}");
                None
            }
        }
    }

    /// Whether `owner`'s preferences archive a message with `with` (a bare JID).
    async fn wanted(&self, server: &Server, owner: &str, with: &str) -> bool {
        let decision = match self.prefs_of(server, owner).await {
            Some(p) => p.decide(with),
            None => Prefs::server_default(server.config.mam.default).decide(with),
        };
        match decision {
            Decision::Archive => true,
            Decision::Skip => false,
            Decision::IfInRoster => match server.store.roster_item(owner, with).await {
                // Hidden items are strangers who asked to subscribe, not contacts.
                Ok(item) => item.is_some_and(|i| !i.hidden),
                Err(e) => {
                    tracing::error!(owner, "storage error reading roster: {e}");
                    false
                }
            },
        }
    }

    /// Store `message` in `owner`'s archive; the new id, or `None` if storage failed (the
    /// message is still routed: losing an archive entry beats losing the message).
    async fn archive(
        &self,
        server: &Server,
        owner: &str,
        with: &str,
        outgoing: bool,
        message: &Element,
    ) -> Option<String> {
        let stamp_us = self.clock.next(now_us());
        let entry = ArchivedMessage {
            owner: owner.to_owned(),
            id: id::new(stamp_us),
            stamp_us,
            with: with.to_owned(),
            outgoing,
            xml: message.to_xml(),
        };
        match server
            .store
            .archive_messages(std::slice::from_ref(&entry))
            .await
        {
            Ok(()) => Some(entry.id),
            Err(e) => {
                tracing::error!(owner, "storage error archiving a message: {e}");
                None
            }
        }
    }

    async fn prefs_iq(
        &self,
        server: &Arc<Server>,
        owner: &str,
        el: &Element,
        set: bool,
    ) -> IqResult {
        let prefs = if set {
            let p = Prefs::parse(el)?;
            server
                .store
                .set_archive_prefs(owner, &p.to_stored())
                .await
                .map_err(|e| {
                    tracing::error!(owner, "storage error storing archive preferences: {e}");
                    StanzaError::new(Cond::InternalServerError)
                })?;
            let p = Arc::new(p);
            self.prefs.put(owner, Some(p.clone()));
            p
        } else {
            self.prefs_of(server, owner)
                .await
                .unwrap_or_else(|| Arc::new(Prefs::server_default(server.config.mam.default)))
        };
        Ok(Some(prefs.to_element()))
    }
}

/// XEP-0313 §4: answer a query of `owner`'s archive for `requester` (a full JID), sending
/// the results first — to `origin`'s queue when the requester is a local session, else routed
/// — and returning the `<fin/>`. Public for other archives (MUC rooms): the caller checks
/// that `requester` may read `owner`'s archive.
pub async fn answer_query(
    server: &Arc<Server>,
    owner: &str,
    requester: &Jid,
    origin: Option<&Arc<Session>>,
    query: &Element,
) -> IqResult {
    answer_query_as(
        server,
        (owner, query::WithJid::Bare),
        requester,
        origin,
        query,
        &|_| {},
    )
    .await
}

/// [`answer_query`] for another kind of archive: `with` matched as `owner.1` says, and `edit`
/// applied to every archived message before it is sent (a room removes the real JIDs the
/// requester may not see).
pub async fn answer_query_as(
    server: &Arc<Server>,
    (owner, with_jid): (&str, query::WithJid),
    requester: &Jid,
    origin: Option<&Arc<Session>>,
    query: &Element,
    edit: &(dyn Fn(&mut Element) + Sync),
) -> IqResult {
    let max_page = server.config.mam.max_page.clamp(1, MAX_PAGE);
    let q = query::parse_as(query, max_page, with_jid)?;
    let internal = |e: franca_store::StoreError| {
        tracing::error!(owner, "storage error querying the archive: {e}");
        StanzaError::new(Cond::InternalServerError)
    };
    for c in &q.cursors {
        if !server.store.archive_has(owner, c).await.map_err(internal)? {
            return Err(StanzaError::new(Cond::ItemNotFound));
        }
    }
    let page = server
        .store
        .archive_query(owner, &q.archive)
        .await
        .map_err(internal)?;
    let mut sent: Vec<&ArchivedMessage> = page.messages.iter().collect();
    if q.flip {
        sent.reverse();
    }
    let to = requester.to_string();
    for m in &sent {
        let Some(msg) = result::result_message_edited(owner, &to, q.queryid.as_deref(), m, edit)
        else {
            tracing::error!(owner, id = m.id, "skipping an unreadable archived message");
            continue;
        };
        match origin {
            Some(session) => {
                session.send(&msg);
            }
            None => server.route(msg).await,
        }
    }
    Ok(Some(result::fin(&page, &sent)))
}

/// XEP-0313 §4.1.5: the form a client fills in.
pub fn query_form() -> Element {
    let field = |var: &str, type_: &str| {
        Element::new("field", NS_DATA_FORMS)
            .with_attr("var", var)
            .with_attr("type", type_)
    };
    let form = Element::new("x", NS_DATA_FORMS)
        .with_attr("type", "form")
        .with_child(
            field("FORM_TYPE", "hidden")
                .with_child(Element::new("value", NS_DATA_FORMS).with_text(NS_MAM)),
        )
        .with_child(field("with", "jid-single"))
        .with_child(field("start", "text-single"))
        .with_child(field("end", "text-single"))
        .with_child(field("before-id", "text-single"))
        .with_child(field("after-id", "text-single"))
        .with_child(field("ids", "text-multi"));
    Element::new("query", NS_MAM).with_child(form)
}

/// The retention job: every [`EXPIRY_INTERVAL`], delete what is older than `days`, in
/// batches. Holds the server only while it works, so it ends with the server.
async fn expiry(server: Weak<Server>, days: u32) {
    loop {
        {
            let Some(server) = server.upgrade() else {
                return;
            };
            let cutoff = now_us().saturating_sub(i64::from(days) * 86_400 * 1_000_000);
            expire(&*server.store, cutoff).await;
        }
        tokio::time::sleep(EXPIRY_INTERVAL).await;
    }
}

/// Delete `owner`'s messages archived before `cutoff_us` (a room's own retention), a batch
/// per statement, until none is left.
pub async fn expire_owner(store: &dyn Store, owner: &str, cutoff_us: i64) -> u64 {
    let mut total = 0;
    loop {
        match store
            .archive_expire_owner(owner, cutoff_us, EXPIRY_BATCH)
            .await
        {
            Ok(n) => {
                total += n;
                if n < u64::from(EXPIRY_BATCH) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::error!(owner, "storage error expiring archived messages: {e}");
                break;
            }
        }
    }
    total
}

/// Delete messages archived before `cutoff_us`, a batch per statement, until none is left.
pub async fn expire(store: &dyn Store, cutoff_us: i64) -> u64 {
    let mut total = 0;
    loop {
        match store.archive_expire(cutoff_us, EXPIRY_BATCH).await {
            Ok(n) => {
                total += n;
                if n < u64::from(EXPIRY_BATCH) {
                    break;
                }
                // Let routing writes in between batches.
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::error!("storage error expiring archived messages: {e}");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(messages = total, "expired archived messages");
    }
    total
}

fn bare_of(attr: Option<&str>) -> Option<BareJid> {
    attr.and_then(|a| Jid::new(a).ok()).map(|j| j.to_bare())
}

#[async_trait::async_trait]
impl Module for Mam {
    fn name(&self) -> &'static str {
        "mam"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Account, NS_MAM)]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[NS_MAM, NS_MAM_EXTENDED, NS_STANZA_ID]
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        // An account's archive is its own (XEP-0313 §4: queries to another entity's archive
        // are refused).
        if !req.from_self() {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let owner = req.to.to_bare().to_string();
        let Some(payload) = req.payload() else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        match (payload.name.as_str(), req.is_set()) {
            ("query", false) => Ok(Some(query_form())),
            ("query", true) => answer_query(server, &owner, &req.from, req.origin, payload).await,
            ("prefs", set) => self.prefs_iq(server, &owner, payload, set).await,
            _ => Err(StanzaError::new(Cond::FeatureNotImplemented)),
        }
    }

    async fn outbound(
        &self,
        server: &Arc<Server>,
        session: &Arc<Session>,
        stanza: &mut Element,
    ) -> Flow {
        if !rules::archivable(stanza) {
            return Flow::Continue;
        }
        let user = session.bare();
        // No `to`, or the user's own account: archived once, as it arrives.
        let Some(with) = bare_of(stanza.attr("to")) else {
            return Flow::Continue;
        };
        if with == user || !self.wanted(server, user.as_str(), with.as_str()).await {
            return Flow::Continue;
        }
        self.archive(server, user.as_str(), with.as_str(), true, stanza)
            .await;
        Flow::Continue
    }

    async fn inbound(&self, server: &Arc<Server>, to: &BareJid, stanza: &mut Element) -> Flow {
        if stanza.name != "message" {
            return Flow::Continue;
        }
        rules::strip_stanza_ids(stanza, to.as_str());
        if !rules::archivable(stanza) {
            return Flow::Continue;
        }
        let Some(with) = bare_of(stanza.attr("from")) else {
            return Flow::Continue;
        };
        if !self.wanted(server, to.as_str(), with.as_str()).await {
            return Flow::Continue;
        }
        if let Some(id) = self
            .archive(server, to.as_str(), with.as_str(), false, stanza)
            .await
        {
            stanza.push(rules::stanza_id(to.as_str(), &id));
        }
        Flow::Continue
    }

    async fn session_event(&self, server: &Arc<Server>, event: &SessionEvent) {
        let days = server.config.mam.retention_days;
        if matches!(event, SessionEvent::Bound(_))
            && days > 0
            && !self.expiry_started.swap(true, Ordering::Relaxed)
        {
            tokio::spawn(expiry(Arc::downgrade(server), days));
        }
    }

    async fn user_removed(&self, _server: &Arc<Server>, user: &BareJid) {
        // The store deletes the archive and preferences with the account.
        self.prefs.forget(user.as_str());
    }
}

#[cfg(test)]
mod tests;
