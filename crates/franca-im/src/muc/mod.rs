//! XEP-0045 Multi-User Chat: one service per served domain (`conference.example.org`, the
//! subdomain set by `[muc] subdomain`), hosted through the core's service registry
//! ([`Module::services`]): the router hands every stanza to the service domain or a JID on it
//! to [`Module::service_stanza`], and nothing else about routing changes.
//!
//! - `room.rs`: one room's state and rules, without I/O (what each stanza changes and which
//!   stanzas follow);
//! - `occupant.rs`: roles, affiliations and who may change whose, RFC 8266 nicknames;
//! - `config.rs`: the `muc#roomconfig` form; `history.rs`: history on join;
//! - `persist.rs`: persistent rooms in storage; `register.rs`: registration and reserved
//!   nicknames.
//!
//! Room archives (XEP-0313 §5.1.2) are written here, under the room's lock before the message
//! is reflected, and queries of them are answered from storage after the lock is released.
//! A destroyed room, or a temporary one that ends, loses its archive (a new room of the same
//! name must not show the old one's messages). An hourly job applies the rooms' own
//! retention (`franca#archive_retention_days`) where it is shorter than the server's, which
//! the archive module's job applies to every archive.
//!
//! This file is the glue: the rooms of each service (a bounded map), one lock per room held
//! while a stanza is handled, stored and delivered (so every occupant sees the same order),
//! room creation (`[muc] create`), the service's own disco, and occupants whose session ends.
//!
//! Delivery while a room is locked goes only to sessions bound on this server, straight into
//! their queues (a groupchat message is serialised once, see [`Fanout`]); anything else
//! (invitations, answers to unbound JIDs) is routed after the lock is released, so routing
//! can never come back into the same room. This direct delivery skips the inbound hooks
//! (blocking), as the sender is the room the user joined.

pub mod config;
pub mod history;
pub mod occupant;
pub mod persist;
pub mod register;
pub mod room;

use franca_core::config::RoomCreation;
use franca_core::session::Fanout;
use franca_core::util::now_us;
use franca_core::{HostedService, Module, Server, SessionEvent};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond, error_reply};
use franca_proto::ns::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC, NS_PING};
use franca_xml::Element;
use jid::{BareJid, FullJid, Jid};
use room::{Ctx, Effects, Out, Room, iq_result};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::OnceCell;

/// The name disco gives the service.
pub const SERVICE_NAME: &str = "Chatrooms";

/// Most rooms one disco#items answer lists.
pub const MAX_LISTED_ROOMS: usize = 1000;

/// A room behind its lock. `gone` is set, under the lock, when the room is removed from its
/// service: whoever waited for the lock looks the room up again.
struct Slot {
    room: Room,
    gone: bool,
}

type RoomCell = Arc<tokio::sync::Mutex<Slot>>;

struct Service {
    domain: String,
    rooms: Mutex<HashMap<String, RoomCell>>,
    /// Persistent rooms are read once, at start (or at the first stanza if that failed).
    loaded: OnceCell<()>,
}

/// How often rooms' own archive retention is applied.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

pub struct Muc {
    /// Shared with the retention job.
    services: Arc<HashMap<String, Service>>,
    /// Rooms each occupant's session is in, so a session that ends leaves them all (kept
    /// loosely: an entry may outlive the occupancy, never the other way round).
    joined: Mutex<HashMap<FullJid, HashSet<BareJid>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Muc {
    pub fn new(config: &franca_core::Config) -> Muc {
        let services = config
            .muc
            .service_domains(&config.server.domains)
            .into_iter()
            .map(|domain| {
                (
                    domain.clone(),
                    Service {
                        domain,
                        rooms: Mutex::default(),
                        loaded: OnceCell::new(),
                    },
                )
            })
            .collect();
        Muc {
            services: Arc::new(services),
            joined: Mutex::default(),
        }
    }

    fn ctx<'a>(server: &'a Server) -> Ctx<'a> {
        Ctx {
            limits: &server.config.muc,
            admins: &server.config.server.admins,
            now_us: now_us(),
            archiving: archiving(&server.config),
        }
    }

    async fn load(&self, server: &Arc<Server>, svc: &Service) -> bool {
        let done = svc
            .loaded
            .get_or_try_init(|| async {
                let stored = server.store.muc_rooms(&svc.domain).await.map_err(|e| {
                    tracing::error!(service = %svc.domain, "cannot load rooms: {e}");
                })?;
                let mut rooms = lock(&svc.rooms);
                for s in &stored {
                    match persist::from_stored(s, &server.config.muc) {
                        Some(room) => {
                            let node = room.jid.node().map(|n| n.to_string()).unwrap_or_default();
                            let slot = Slot { room, gone: false };
                            rooms.insert(node, Arc::new(tokio::sync::Mutex::new(slot)));
                        }
                        None => tracing::warn!(room = %s.jid, "stored room unreadable; skipped"),
                    }
                }
                tracing::info!(service = %svc.domain, "{} persistent rooms", stored.len());
                Ok::<(), ()>(())
            })
            .await;
        done.is_ok()
    }

    /// Whether `from` may create a room here (`[muc] create`).
    fn may_create(server: &Server, from: &FullJid) -> bool {
        match server.config.muc.create {
            RoomCreation::Everyone => true,
            RoomCreation::Local => server.serves(from.domain().as_str()),
            RoomCreation::Admins => server.config.is_admin(from.to_bare().as_str()),
        }
    }

    /// The room `node`, created for `from` when `create` (a join) and allowed. Errors are the
    /// answers to a join that cannot create it.
    fn find_or_create(
        server: &Server,
        svc: &Service,
        room: &BareJid,
        create: Option<(&FullJid, &Element)>,
    ) -> Result<(RoomCell, bool), StanzaError> {
        let node = room.node().map(|n| n.to_string()).unwrap_or_default();
        let mut rooms = lock(&svc.rooms);
        if let Some(cell) = rooms.get(&node) {
            return Ok((cell.clone(), false));
        }
        let Some((from, presence)) = create else {
            return Err(StanzaError::new(Cond::ItemNotFound));
        };
        if !Self::may_create(server, from) {
            return Err(StanzaError::new(Cond::NotAllowed));
        }
        let limits = &server.config.muc;
        if rooms.len() >= limits.max_rooms {
            return Err(StanzaError::new(Cond::ResourceConstraint)
                .with_text("this service holds as many rooms as it may"));
        }
        // §10.1.1: a client that speaks MUC gets a locked room to configure; an old one (no
        // `<x/>`) an instant room.
        let locked = presence.has_child("x", NS_MUC);
        let mut r = Room::new(
            room.clone(),
            config::RoomConfig::new(limits),
            locked,
            now_us(),
        );
        r.set_affiliation(
            from.to_bare().to_string(),
            occupant::Affiliation::Owner,
            None,
        );
        let cell = Arc::new(tokio::sync::Mutex::new(Slot {
            room: r,
            gone: false,
        }));
        rooms.insert(node, cell.clone());
        Ok((cell, true))
    }

    /// Handle one stanza for room `room` with `handle`, then store, deliver, and drop the room
    /// if it ended.
    async fn in_room(
        &self,
        server: &Arc<Server>,
        (svc, room): (&Service, &BareJid),
        from: &FullJid,
        stanza: &Element,
        create: bool,
        handle: impl Fn(&mut Room, &Ctx, bool) -> Effects,
    ) {
        let mut later = Vec::new();
        let mut read = None;
        // A room removed while we waited for its lock is looked up again (at most twice: it
        // cannot be removed again before our turn comes).
        for _ in 0..3 {
            let found = Self::find_or_create(server, svc, room, create.then_some((from, stanza)));
            let (cell, created) = match found {
                Ok(found) => found,
                Err(e) => {
                    later.extend(error_reply(stanza, &e));
                    break;
                }
            };
            let mut slot = cell.lock().await;
            if slot.gone {
                continue;
            }
            let ctx = Self::ctx(server);
            let mut fx = handle(&mut slot.room, &ctx, created);
            read = fx.read.take();
            self.carry_out(server, svc, &slot.room, stanza, fx, &mut later)
                .await;
            self.track(from, &slot.room);
            if slot.room.is_empty() && (!slot.room.config.persistent || slot.room.locked) {
                slot.gone = true;
                let node = room.node().map(|n| n.to_string()).unwrap_or_default();
                {
                    let mut rooms = lock(&svc.rooms);
                    if rooms.get(&node).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                        rooms.remove(&node);
                    }
                }
                remove_archive(server, &slot.room).await;
            }
            break;
        }
        for stanza in later {
            server.route(stanza).await;
        }
        if let Some(read) = read {
            answer_archive_query(server, room, from, read).await;
        }
    }

    /// Keep the index of `from`'s rooms in step with `room`.
    fn track(&self, from: &FullJid, room: &Room) {
        let inside = room.occupant_jids().any(|j| j == from);
        let mut joined = lock(&self.joined);
        if inside {
            joined
                .entry(from.clone())
                .or_default()
                .insert(room.jid.clone());
        } else if let Some(set) = joined.get_mut(from) {
            set.remove(&room.jid);
            if set.is_empty() {
                joined.remove(from);
            }
        }
    }

    /// Store what changed, then deliver. A failed write answers the request with
    /// `internal-server-error` instead of its result; the broadcasts still go, since the room
    /// changed in memory.
    async fn carry_out(
        &self,
        server: &Arc<Server>,
        svc: &Service,
        room: &Room,
        request: &Element,
        fx: Effects,
        later: &mut Vec<Element>,
    ) {
        let mut failed = false;
        if let Some(save) = &fx.save
            && let Err(e) = persist::save(&*server.store, &svc.domain, room, save).await
        {
            tracing::error!(room = %room.jid, "storage error saving the room: {e}");
            failed = true;
        }
        if fx.remove_archive {
            remove_archive(server, room).await;
        }
        // The message goes out even when archiving failed (losing an archive entry beats
        // losing the message); its stanza-id then finds nothing.
        if let Some(entry) = &fx.archive
            && let Err(e) = server
                .store
                .archive_messages(std::slice::from_ref(entry))
                .await
        {
            tracing::error!(room = %room.jid, "storage error archiving a message: {e}");
        }
        for out in fx.out {
            match out {
                Out::Send(el) => {
                    if failed && el.name == "iq" && el.attr("type") == Some("result") {
                        let err = StanzaError::new(Cond::InternalServerError);
                        later.extend(error_reply(request, &err));
                        continue;
                    }
                    match local_session(server, &el) {
                        Some(session) => {
                            session.send(&el);
                        }
                        None => later.push(el),
                    }
                }
                Out::Fanout(shared, to) => deliver(server, &shared, &to, later),
            }
        }
    }

    async fn handle(&self, server: &Arc<Server>, svc: &Service, to: Jid, stanza: Element) {
        let from = match stanza.attr("from").map(Jid::new) {
            Some(Ok(from)) => from,
            _ => return,
        };
        if !self.load(server, svc).await {
            let err = StanzaError::new(Cond::InternalServerError);
            if let Some(reply) = error_reply(&stanza, &err) {
                server.route(reply).await;
            }
            return;
        }
        let Some(node) = to.node() else {
            return self.to_service(server, svc, &stanza).await;
        };
        let room = BareJid::from_parts(Some(node), to.domain());
        // Occupants are full JIDs; anything else has nobody to answer as.
        let Ok(from) = from.try_into_full() else {
            if let Some(reply) = error_reply(&stanza, &StanzaError::new(Cond::BadRequest)) {
                server.route(reply).await;
            }
            return;
        };
        let nick = to.resource().map(|r| r.as_str().to_owned());
        match (stanza.name.as_str(), nick) {
            ("presence", Some(nick)) => {
                let create = stanza.attr("type").is_none();
                self.in_room(
                    server,
                    (svc, &room),
                    &from,
                    &stanza,
                    create,
                    |r, ctx, created| r.presence(ctx, &from, &nick, &stanza, created),
                )
                .await
            }
            ("presence", None) => {
                // §7.2.1: a join needs a nickname.
                if stanza.attr("type").is_none()
                    && let Some(reply) = error_reply(&stanza, &StanzaError::new(Cond::JidMalformed))
                {
                    server.route(reply).await;
                }
            }
            ("message", None) => {
                self.in_room(server, (svc, &room), &from, &stanza, false, |r, ctx, _| {
                    r.message(ctx, &from, &stanza)
                })
                .await
            }
            ("message", Some(nick)) => {
                self.in_room(server, (svc, &room), &from, &stanza, false, |r, _, _| {
                    r.private_message(&from, &nick, &stanza)
                })
                .await
            }
            ("iq", None) => {
                self.in_room(server, (svc, &room), &from, &stanza, false, |r, ctx, _| {
                    r.iq(ctx, &from, &stanza)
                })
                .await
            }
            ("iq", Some(nick)) => {
                self.in_room(server, (svc, &room), &from, &stanza, false, |r, _, _| {
                    r.occupant_iq(&from, &nick, &stanza)
                })
                .await
            }
            _ => {}
        }
    }

    /// Stanzas to the service itself: its disco (the public rooms as items) and ping.
    async fn to_service(&self, server: &Arc<Server>, svc: &Service, stanza: &Element) {
        let reply = match (stanza.name.as_str(), stanza.attr("type")) {
            ("iq", Some("get")) => match stanza.first_element() {
                Some(q) if q.is("query", NS_DISCO_INFO) && q.attr("node").is_none() => {
                    Ok(Some(service_info(archiving(&server.config).is_some())))
                }
                Some(q) if q.is("query", NS_DISCO_ITEMS) && q.attr("node").is_none() => {
                    Ok(Some(self.public_rooms(svc).await))
                }
                Some(q) if q.is("ping", NS_PING) => Ok(None),
                _ => Err(StanzaError::new(Cond::ServiceUnavailable)),
            },
            ("iq", Some("set")) | ("message", _) => Err(StanzaError::new(Cond::ServiceUnavailable)),
            _ => return,
        };
        let answer = match reply {
            Ok(payload) => Some(iq_result(stanza, payload)),
            Err(e) => error_reply(stanza, &e),
        };
        if let Some(a) = answer {
            server.route(a).await;
        }
    }

    /// XEP-0045 §6.3: the public rooms, by JID, at most [`MAX_LISTED_ROOMS`].
    async fn public_rooms(&self, svc: &Service) -> Element {
        let cells: Vec<RoomCell> = lock(&svc.rooms).values().cloned().collect();
        let mut items = Vec::new();
        for cell in cells {
            let slot = cell.lock().await;
            if !slot.gone && slot.room.listed() {
                let name = &slot.room.config.name;
                items.push((slot.room.jid.to_string(), name.clone()));
            }
        }
        items.sort();
        let mut q = Element::new("query", NS_DISCO_ITEMS);
        for (jid, name) in items.into_iter().take(MAX_LISTED_ROOMS) {
            let mut item = Element::new("item", NS_DISCO_ITEMS).with_attr("jid", jid);
            if !name.is_empty() {
                item.set_attr("name", name);
            }
            q.push(item);
        }
        q
    }

    /// The session of `jid` ended: it leaves every room it was in.
    async fn session_ended(&self, server: &Arc<Server>, jid: &FullJid) {
        let Some(rooms) = lock(&self.joined).remove(jid) else {
            return;
        };
        for room in rooms {
            let Some(svc) = self.services.get(room.domain().as_str()) else {
                continue;
            };
            let node = room.node().map(|n| n.to_string()).unwrap_or_default();
            let Some(cell) = lock(&svc.rooms).get(&node).cloned() else {
                continue;
            };
            let mut later = Vec::new();
            let mut slot = cell.lock().await;
            if slot.gone {
                continue;
            }
            let ctx = Self::ctx(server);
            let fx = slot.room.gone(&ctx, jid);
            let none = Element::new("presence", franca_proto::ns::NS_CLIENT);
            self.carry_out(server, svc, &slot.room, &none, fx, &mut later)
                .await;
            if slot.room.is_empty() && (!slot.room.config.persistent || slot.room.locked) {
                slot.gone = true;
                {
                    let mut rooms = lock(&svc.rooms);
                    if rooms.get(&node).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                        rooms.remove(&node);
                    }
                }
                remove_archive(server, &slot.room).await;
            }
            drop(slot);
            for stanza in later {
                server.route(stanza).await;
            }
        }
    }
}

/// What the configuration lets rooms archive: `[muc] archive` with `[mam] enabled`.
fn archiving(config: &franca_core::Config) -> Option<config::Archiving> {
    (config.muc.archive && config.mam.enabled).then_some(config::Archiving {
        max_retention_days: config.mam.retention_days,
    })
}

/// Delete the archive of a room that is gone.
async fn remove_archive(server: &Server, room: &Room) {
    if archiving(&server.config).is_none() {
        return;
    }
    if let Err(e) = server.store.archive_remove(room.jid.as_str()).await {
        tracing::error!(room = %room.jid, "storage error removing the room's archive: {e}");
    }
}

/// Answer a XEP-0313 query of `room`'s archive the room allowed, leaving out real JIDs the
/// requester may not see.
async fn answer_archive_query(
    server: &Arc<Server>,
    room: &BareJid,
    from: &FullJid,
    read: room::ArchiveRead,
) {
    let Some(query) = read.iq.child("query", crate::mam::NS_MAM) else {
        return;
    };
    let origin = server.sessions.get(from);
    let requester = Jid::from(from.clone());
    let reveal = read.reveal_jids;
    let hide = move |m: &mut Element| {
        if !reveal {
            while m.remove_child("x", franca_proto::ns::NS_MUC_USER).is_some() {}
        }
    };
    let answer = crate::mam::answer_query_as(
        server,
        (room.as_str(), crate::mam::query::WithJid::AsGiven),
        &requester,
        origin.as_ref(),
        query,
        &hide,
    )
    .await;
    let reply = match answer {
        Ok(fin) => Some(iq_result(&read.iq, fin)),
        Err(e) => error_reply(&read.iq, &e),
    };
    if let Some(reply) = reply {
        match local_session(server, &reply) {
            Some(session) => {
                session.send(&reply);
            }
            None => server.route(reply).await,
        }
    }
}

/// Every hour, the rooms' own retention ([`expire_room_archives`]). Holds the server only
/// while it works, so it ends with the server.
async fn retention(server: Weak<Server>, services: Arc<HashMap<String, Service>>) {
    loop {
        tokio::time::sleep(RETENTION_INTERVAL).await;
        let Some(server) = server.upgrade() else {
            return;
        };
        expire_room_archives(&server, &services, now_us()).await;
    }
}

/// Each room whose own retention is shorter than the server's loses what it archived before
/// that many days ago (the server's own limit is the archive module's job). Returns how many
/// messages went.
async fn expire_room_archives(
    server: &Server,
    services: &HashMap<String, Service>,
    now_us: i64,
) -> u64 {
    let Some(archiving) = archiving(&server.config) else {
        return 0;
    };
    let mut due = Vec::new();
    for svc in services.values() {
        let cells: Vec<RoomCell> = lock(&svc.rooms).values().cloned().collect();
        for cell in cells {
            let slot = cell.lock().await;
            let days = slot.room.config.retention_days(archiving);
            if !slot.gone && days > 0 && days != archiving.max_retention_days {
                due.push((slot.room.jid.to_string(), days));
            }
        }
    }
    let mut total = 0;
    for (room, days) in due {
        let cutoff = now_us.saturating_sub(i64::from(days).saturating_mul(86_400_000_000));
        let n = crate::mam::expire_owner(&*server.store, &room, cutoff).await;
        if n > 0 {
            tracing::info!(%room, messages = n, "expired archived room messages");
        }
        total += n;
    }
    total
}

/// The local session a stanza is addressed to, when its `to` is a bound full JID here.
fn local_session(server: &Server, el: &Element) -> Option<Arc<franca_core::Session>> {
    let to = Jid::new(el.attr("to")?).ok()?;
    let full = to.try_as_full().ok()?;
    if !server.serves(full.domain().as_str()) {
        return None;
    }
    server.sessions.get(full)
}

/// One serialisation to every listed occupant that has a session here: each queue gets the
/// shared bytes, and the occupant's connection writes its own `to` into them. An occupant on
/// another server gets a copy in `later`, routed (through federation) once the room's lock is
/// released; the shared bytes are read back into a stanza once for all of them.
fn deliver(server: &Server, shared: &Fanout, to: &[FullJid], later: &mut Vec<Element>) {
    let mut remote: Option<Option<Element>> = None;
    for jid in to {
        if server.serves(jid.domain().as_str()) {
            if let Some(s) = server.sessions.get(jid) {
                s.send_fanout(shared);
            }
            continue;
        }
        let stanza = remote.get_or_insert_with(|| {
            // Our own serialisation: it fits the limits it was read with, plus slack.
            let limits = franca_xml::Limits {
                max_stanza_bytes: shared.len() + 1024,
                ..franca_xml::Limits::default()
            };
            franca_xml::read_document(
                shared.untargeted().as_bytes(),
                limits,
                Some(franca_proto::ns::NS_CLIENT),
            )
            .ok()
            .flatten()
        });
        if let Some(stanza) = stanza {
            let mut copy = stanza.clone();
            copy.set_attr("to", jid.as_str());
            later.push(copy);
        }
    }
}

/// The service's disco#info; `archives`: rooms keep XEP-0313 archives (advertised here too, as
/// ejabberd does, so a client sees it before it picks a room).
fn service_info(archives: bool) -> Element {
    let mut q = Element::new("query", NS_DISCO_INFO).with_child(
        Element::new("identity", NS_DISCO_INFO)
            .with_attr("category", "conference")
            .with_attr("type", "text")
            .with_attr("name", SERVICE_NAME),
    );
    for f in [
        NS_DISCO_INFO,
        NS_DISCO_ITEMS,
        NS_MUC,
        franca_proto::ns::NS_OCCUPANT_ID,
        NS_PING,
    ] {
        q.push(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
    }
    if archives {
        q.push(Element::new("feature", NS_DISCO_INFO).with_attr("var", crate::mam::NS_MAM));
    }
    q
}

#[async_trait::async_trait]
impl Module for Muc {
    fn name(&self) -> &'static str {
        "muc"
    }

    fn services(&self, _config: &franca_core::Config) -> Vec<HostedService> {
        let mut list: Vec<HostedService> = self
            .services
            .keys()
            .map(|domain| HostedService {
                domain: domain.clone(),
                name: SERVICE_NAME,
            })
            .collect();
        list.sort_by(|a, b| a.domain.cmp(&b.domain));
        list
    }

    async fn service_stanza(&self, server: &Arc<Server>, to: Jid, stanza: Element) {
        if let Some(svc) = self.services.get(to.domain().as_str()) {
            self.handle(server, svc, to, stanza).await;
        }
    }

    async fn start(&self, server: &Arc<Server>) {
        for svc in self.services.values() {
            self.load(server, svc).await;
        }
        if archiving(&server.config).is_some() {
            tokio::spawn(retention(Arc::downgrade(server), self.services.clone()));
        }
    }

    async fn session_event(&self, server: &Arc<Server>, event: &SessionEvent) {
        if let SessionEvent::Closed(session) = event {
            self.session_ended(server, &session.jid).await;
        }
    }
}

#[cfg(test)]
mod archive_tests;
#[cfg(test)]
mod register_tests;
#[cfg(test)]
mod tests;
