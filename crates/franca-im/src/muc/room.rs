//! One room's state and the XEP-0045 rules for what reaches it, without I/O: each handler
//! changes the room and returns [`Effects`] — the stanzas to send and what to store — which
//! the module glue (`mod.rs`) carries out, storing before it answers.
//!
//! - §7.2 entering (instant and locked new rooms, §10.1), status codes 100/110/201, history
//!   (§7.2.15) and the subject (§7.2.16); §7.3 leaving; §7.6 nick changes (303); §7.7
//!   presence updates.
//! - §7.4 groupchat messages (reflected once to everyone), §7.5 private messages, §8.1 subject
//!   changes, §7.8 mediated invitations and declines.
//! - §8–§10: roles and affiliations (kick 307, ban 301, members-only removal 321/322, voice),
//!   the `muc#admin` lists, the `muc#owner` configuration form and room destruction.
//! - XEP-0410 self-ping on the occupant JID, XEP-0421 occupant ids.
//! - Multi-session nicknames (as Prosody and ejabberd allow): a user may be in the room under
//!   one nickname from several resources. Each session is an occupant of its own (messages
//!   reach every one), but the others see one occupant: a session that leaves while another
//!   stays is not announced as gone, and a kick, ban or nick change applies to all of them.
//! - §7.10 registration (the user becomes a member) and §7.12 reserved nicknames, which
//!   nobody else may enter under (`conflict`); §7.9 the `x-roomuser-item` disco node.
//! - XEP-0313 §5.1.2 the room's archive: each archived groupchat message gets the room's
//!   XEP-0359 `<stanza-id by='room@service'/>` before it is reflected, and is stored as the
//!   room sent it with the sender's real bare JID in a `muc#user` `<item/>`, which queries
//!   show only to those who may see real JIDs. Who may query is [`Room::archive_access`].

use super::config::{Archiving, RoomConfig, Whois};
use super::history::{History, HistoryRequest};
use super::occupant::{
    Affiliation, Occupant, Role, RoleRefusal, default_role, may_set_affiliation, may_set_role,
    nick_key, valid_nick,
};
use super::register::{self, ReservedNicks};
use crate::mam;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use franca_core::config::MucConfig;
use franca_core::session::Fanout;
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond, error_reply};
use franca_proto::ns::{
    NS_CLIENT, NS_DATA_FORMS, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC, NS_MUC_ADMIN, NS_MUC_OWNER,
    NS_MUC_ROOMINFO, NS_MUC_SELF_PING, NS_MUC_USER, NS_OCCUPANT_ID, NS_PING, NS_REGISTER,
    NS_STANZA_ID,
};
use franca_store::ArchivedMessage;
use franca_xml::Element;
use jid::{BareJid, FullJid, Jid};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// What a handler asks the glue to do.
#[derive(Debug, Default)]
pub struct Effects {
    /// Stanzas to send, in order, after `save` succeeded.
    pub out: Vec<Out>,
    /// What to store first (persistent rooms only).
    pub save: Option<Save>,
    /// A message for the room's archive, stored before anything is sent.
    pub archive: Option<ArchivedMessage>,
    /// A XEP-0313 query of the room's archive, answered once the room is unlocked.
    pub read: Option<ArchiveRead>,
    /// The room is destroyed: its archive goes too.
    pub remove_archive: bool,
}

/// A XEP-0313 query the room allowed.
#[derive(Debug)]
pub struct ArchiveRead {
    /// The `<iq type='set'>` carrying the `<query/>`.
    pub iq: Element,
    /// The requester may see the senders' real JIDs.
    pub reveal_jids: bool,
}

#[derive(Debug)]
pub enum Out {
    /// One addressed stanza, routed like any other.
    Send(Element),
    /// One stanza to several occupants, serialised once.
    Fanout(Fanout, Vec<FullJid>),
}

/// A write to storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Save {
    /// The configuration and subject.
    Room,
    /// The configuration, subject and every affiliation (the room just became persistent).
    RoomAndAffiliations,
    /// These affiliations changed (`None` removes).
    Affiliations(Vec<(String, Affiliation, Option<String>)>),
    /// The room is gone (destroyed, or no longer persistent).
    Remove,
}

/// What the handlers need from outside the room.
pub struct Ctx<'a> {
    pub limits: &'a MucConfig,
    /// The server's administrators (`server.admins`): owners of every room.
    pub admins: &'a [String],
    pub now_us: i64,
    /// Whether rooms may archive, and for how long at most.
    pub archiving: Option<Archiving>,
}

pub struct Room {
    pub jid: BareJid,
    pub config: RoomConfig,
    /// Everyone whose affiliation is not `none`, by bare JID, with the reason given.
    affiliations: HashMap<String, (Affiliation, Option<String>)>,
    /// Nicknames reserved for members and above (§7.12), by bare JID.
    reserved: ReservedNicks,
    occupants: Vec<Occupant>,
    /// The last subject change as reflected (`<message type='groupchat'><subject/>`).
    subject: Option<Element>,
    history: History,
    /// Created by a join with `<x xmlns='…muc'/>` and not configured yet (§10.1.2): only its
    /// owners may enter.
    pub locked: bool,
    pub created_us: i64,
    /// Archive time of the last archived message, so the next one's is later (archive ids
    /// must grow in archiving order, and the room's lock orders its messages).
    last_archived_us: i64,
}

/// An empty groupchat message from `from`.
fn groupchat(from: &str) -> Element {
    Element::new("message", NS_CLIENT)
        .with_attr("from", from)
        .with_attr("type", "groupchat")
}

fn status(code: u16) -> Element {
    Element::new("status", NS_MUC_USER).with_attr("code", code.to_string())
}

fn error_to(stanza: &Element, err: StanzaError) -> Vec<Out> {
    error_reply(stanza, &err)
        .map(|e| vec![Out::Send(e)])
        .unwrap_or_default()
}

/// How an occupant's presence is announced.
#[derive(Default, Clone)]
struct Announce<'a> {
    unavailable: bool,
    /// Status codes for everyone.
    codes: &'a [u16],
    /// Extra status codes for the occupant itself (110 is always added).
    self_codes: &'a [u16],
    /// The new nick (303).
    new_nick: Option<&'a str>,
    actor: Option<&'a str>,
    reason: Option<&'a str>,
    /// Not sent to the occupant itself (a join, before its own presence).
    skip_self: bool,
    destroy: Option<Element>,
}

impl Room {
    pub fn new(jid: BareJid, config: RoomConfig, locked: bool, created_us: i64) -> Room {
        Room {
            jid,
            config,
            affiliations: HashMap::new(),
            reserved: ReservedNicks::default(),
            occupants: Vec::new(),
            subject: None,
            history: History::default(),
            locked,
            created_us,
            last_archived_us: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.occupants.is_empty()
    }

    pub fn occupant_count(&self) -> usize {
        self.occupants.len()
    }

    /// Real JIDs of the occupants.
    pub fn occupant_jids(&self) -> impl Iterator<Item = &FullJid> {
        self.occupants.iter().map(|o| &o.jid)
    }

    pub fn subject(&self) -> Option<&Element> {
        self.subject.as_ref()
    }

    pub fn set_subject(&mut self, subject: Option<Element>) {
        self.subject = subject;
    }

    /// Affiliations as stored: every entry but `none`, sorted by JID.
    pub fn affiliation_list(&self) -> Vec<(String, Affiliation, Option<String>)> {
        let mut list: Vec<_> = self
            .affiliations
            .iter()
            .map(|(j, (a, r))| (j.clone(), *a, r.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// The nickname reserved for a bare JID (§7.12).
    pub fn reserved_nick(&self, bare: &str) -> Option<&str> {
        self.reserved.of(bare)
    }

    /// Reserve `nick` for `bare`, which must be a member or above (a stored reservation read
    /// back; registration checks conflicts first).
    pub fn reserve_nick(&mut self, bare: String, nick: String) {
        if self
            .affiliations
            .get(&bare)
            .is_some_and(|(a, _)| *a >= Affiliation::Member)
        {
            self.reserved.reserve(bare, nick);
        }
    }

    /// Whether `nick` is reserved for someone other than `bare`.
    fn reserved_for_another(&self, nick: &str, bare: &str) -> bool {
        self.reserved.holder(nick).is_some_and(|h| h != bare)
    }

    /// Set a bare JID's affiliation; below member, its reserved nickname goes too.
    pub fn set_affiliation(&mut self, jid: String, aff: Affiliation, reason: Option<String>) {
        if aff < Affiliation::Member {
            self.reserved.release(&jid);
        }
        if aff == Affiliation::None {
            self.affiliations.remove(&jid);
        } else {
            self.affiliations.insert(jid, (aff, reason));
        }
    }

    /// The affiliation of a bare JID; server administrators own every room.
    pub fn affiliation(&self, ctx: &Ctx, bare: &str) -> Affiliation {
        if ctx.admins.iter().any(|a| a == bare) {
            return Affiliation::Owner;
        }
        self.affiliations
            .get(bare)
            .map(|(a, _)| *a)
            .unwrap_or(Affiliation::None)
    }

    /// Listed in the service's disco#items.
    pub fn listed(&self) -> bool {
        self.config.public && !self.locked
    }

    fn by_jid(&self, jid: &FullJid) -> Option<usize> {
        self.occupants.iter().position(|o| o.jid == *jid)
    }

    fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }

    fn occupant_jid(&self, nick: &str) -> String {
        format!("{}/{nick}", self.jid)
    }

    /// XEP-0421: a hash of the user's bare JID keyed by the room's secret, so it is stable
    /// across visits and tells nothing about the JID.
    fn occupant_id(&self, bare: &BareJid) -> String {
        let mut h = Sha256::new();
        h.update(self.config.secret);
        h.update(bare.as_str().as_bytes());
        B64.encode(&h.finalize()[..18])
    }

    /// Whether `viewer` may see real JIDs (§7.2.3, `muc#roomconfig_whois`).
    fn sees_jids(&self, viewer: &Occupant) -> bool {
        self.config.whois == Whois::Anyone || viewer.role == Role::Moderator
    }

    /// The presence the room sends about `o`: `with_jid` adds its real JID, `own` the codes
    /// for the occupant itself.
    fn presence_of(
        &self,
        ctx: &Ctx,
        o: &Occupant,
        a: &Announce,
        with_jid: bool,
        own: bool,
    ) -> Element {
        let mut p = if a.unavailable {
            Element::new("presence", NS_CLIENT).with_attr("type", "unavailable")
        } else {
            o.presence.clone()
        };
        p.attrs.retain(|(k, _)| k == "type");
        p.set_attr("from", self.occupant_jid(&o.nick));
        let aff = self.affiliation(ctx, o.jid.to_bare().as_str());
        let role = if a.unavailable { Role::None } else { o.role };
        let mut item = Element::new("item", NS_MUC_USER)
            .with_attr("affiliation", aff.name())
            .with_attr("role", role.name());
        if with_jid {
            item.set_attr("jid", o.jid.as_str());
        }
        if let Some(n) = a.new_nick {
            item.set_attr("nick", n);
        }
        if let Some(actor) = a.actor {
            item.push(Element::new("actor", NS_MUC_USER).with_attr("nick", actor));
        }
        if let Some(r) = a.reason {
            item.push(Element::new("reason", NS_MUC_USER).with_text(r));
        }
        let mut x = Element::new("x", NS_MUC_USER).with_child(item);
        if let Some(d) = &a.destroy {
            x.push(d.clone());
        }
        let mut codes: Vec<u16> = a.codes.to_vec();
        if own {
            codes.extend_from_slice(a.self_codes);
            codes.push(110);
        }
        codes.sort_unstable();
        codes.dedup();
        for c in codes {
            x.push(status(c));
        }
        p.push(x);
        p.push(Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", o.id.as_str()));
        p
    }

    /// Tell every occupant (and `o` itself, unless skipped or already removed) about `o`:
    /// one serialisation per form (itself, with the real JID, without it).
    fn announce(&self, ctx: &Ctx, o: &Occupant, a: &Announce, out: &mut Vec<Out>) {
        let mut with = Vec::new();
        let mut without = Vec::new();
        for viewer in &self.occupants {
            if viewer.jid == o.jid {
                continue;
            }
            if same_occupant(viewer, o) {
                // Another session of the same occupant hears of itself (110).
                let mut p = self.presence_of(ctx, o, a, true, true);
                p.set_attr("to", viewer.jid.as_str());
                out.push(Out::Send(p));
            } else if self.sees_jids(viewer) {
                with.push(viewer.jid.clone());
            } else {
                without.push(viewer.jid.clone());
            }
        }
        for (list, with_jid) in [(with, true), (without, false)] {
            if !list.is_empty() {
                let p = self.presence_of(ctx, o, a, with_jid, false);
                out.push(Out::Fanout(Fanout::new(&p), list));
            }
        }
        if !a.skip_self {
            let mut p = self.presence_of(ctx, o, a, true, true);
            p.set_attr("to", o.jid.as_str());
            out.push(Out::Send(p));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Presence (§7.2, §7.3, §7.6, §7.7)

    /// Presence from `from` to `room/nick`. `created`: this join created the room.
    pub fn presence(
        &mut self,
        ctx: &Ctx,
        from: &FullJid,
        nick: &str,
        stanza: &Element,
        created: bool,
    ) -> Effects {
        let mut fx = Effects::default();
        let at = self.by_jid(from);
        match (stanza.attr("type"), at) {
            (None, None) => self.join(ctx, from, nick, stanza, created, &mut fx),
            (None, Some(i)) if self.occupants[i].nick == nick => {
                self.update(ctx, i, stanza, &mut fx)
            }
            (None, Some(i)) => self.change_nick(ctx, i, nick, stanza, &mut fx),
            (Some("unavailable"), Some(i)) => self.leave(ctx, i, Announce::default(), &mut fx.out),
            // §7.2.? a client that cannot take the room's stanzas: it is out (333).
            (Some("error"), Some(i)) => {
                let a = Announce {
                    codes: &[333],
                    ..Announce::default()
                };
                self.leave(ctx, i, a, &mut fx.out);
            }
            _ => {}
        }
        fx
    }

    fn join(
        &mut self,
        ctx: &Ctx,
        from: &FullJid,
        nick: &str,
        stanza: &Element,
        created: bool,
        fx: &mut Effects,
    ) {
        let bare = from.to_bare();
        let aff = self.affiliation(ctx, bare.as_str());
        let x = stanza.child("x", NS_MUC);
        let refuse = StanzaError::new;
        let err = if !valid_nick(nick, ctx.limits.max_nick_chars) {
            Some(refuse(Cond::NotAcceptable).with_text("this nickname is not allowed"))
        } else if self.locked && aff != Affiliation::Owner {
            // §10.1.1: nobody enters a room still waiting for its configuration.
            Some(refuse(Cond::ItemNotFound))
        } else if aff == Affiliation::Outcast {
            Some(refuse(Cond::Forbidden))
        } else if self.config.members_only && aff < Affiliation::Member {
            Some(refuse(Cond::RegistrationRequired))
        } else if self.config.password.as_deref().is_some_and(|p| {
            x.and_then(|x| x.child("password", NS_MUC))
                .map(Element::text)
                .as_deref()
                != Some(p)
        }) {
            Some(refuse(Cond::NotAuthorized))
        } else if self
            .occupants
            .iter()
            .any(|o| o.key == nick_key(nick) && !(o.nick == nick && o.jid.to_bare() == bare))
            || self.reserved_for_another(nick, bare.as_str())
        {
            // A user's own nickname from another resource is a second session, not a conflict.
            // §7.2.9: in use, or reserved for someone else (§7.12).
            Some(refuse(Cond::Conflict))
        } else if aff < Affiliation::Admin
            && self.occupants.len() >= self.config.max_occupants as usize
        {
            Some(refuse(Cond::ServiceUnavailable))
        } else {
            None
        };
        if let Some(e) = err {
            fx.out = error_to(stanza, e);
            return;
        }
        // A second session takes the role the occupant has.
        let role = self
            .occupants
            .iter()
            .find(|o| o.nick == nick && o.jid.to_bare() == bare)
            .map_or(default_role(aff, self.config.moderated), |o| o.role);
        let occupant = Occupant {
            nick: nick.to_owned(),
            key: nick_key(nick),
            jid: from.clone(),
            role,
            id: self.occupant_id(&bare),
            presence: clean_presence(stanza),
        };
        // §7.2.3: first everyone already present, then the others hear of the newcomer, then
        // its own presence (110, and 201 for a new room, 100 when JIDs are public).
        let sees = self.config.whois == Whois::Anyone || occupant.role == Role::Moderator;
        for o in self
            .occupants
            .iter()
            .filter(|o| !same_occupant(o, &occupant))
        {
            let mut p = self.presence_of(ctx, o, &Announce::default(), sees, false);
            p.set_attr("to", from.as_str());
            fx.out.push(Out::Send(p));
        }
        let mut self_codes = Vec::new();
        if self.config.whois == Whois::Anyone {
            self_codes.push(100);
        }
        if created {
            self_codes.push(201);
        }
        let announce = Announce {
            self_codes: &self_codes,
            ..Announce::default()
        };
        self.announce(ctx, &occupant, &announce, &mut fx.out);
        // §7.2.15: the history the joiner asked for, within what the room keeps.
        let req = HistoryRequest::from_join(x, ctx.now_us);
        for m in self.history.select(&req) {
            fx.out.push(Out::Fanout(m.clone(), vec![from.clone()]));
        }
        // §7.2.16: the subject, even an empty one, ends the join.
        let mut subject = self.subject.clone().unwrap_or_else(|| {
            groupchat(self.jid.as_str()).with_child(Element::new("subject", NS_CLIENT))
        });
        subject.set_attr("to", from.as_str());
        fx.out.push(Out::Send(subject));
        self.occupants.push(occupant);
    }

    fn update(&mut self, ctx: &Ctx, i: usize, stanza: &Element, fx: &mut Effects) {
        self.occupants[i].presence = clean_presence(stanza);
        let o = self.occupants[i].clone();
        self.announce(ctx, &o, &Announce::default(), &mut fx.out);
    }

    /// §7.6: unavailable with 303 and the new nick, then available under it.
    fn change_nick(&mut self, ctx: &Ctx, i: usize, nick: &str, stanza: &Element, fx: &mut Effects) {
        let key = nick_key(nick);
        let err = if !valid_nick(nick, ctx.limits.max_nick_chars) {
            Some(StanzaError::new(Cond::NotAcceptable).with_text("this nickname is not allowed"))
        } else if self
            .occupants
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.key == key && !same_occupant(o, &self.occupants[i]))
            || self.reserved_for_another(nick, self.occupants[i].jid.to_bare().as_str())
        {
            Some(StanzaError::new(Cond::Conflict))
        } else {
            None
        };
        if let Some(e) = err {
            fx.out = error_to(stanza, e);
            return;
        }
        let old = self.occupants[i].clone();
        let leaving = Announce {
            unavailable: true,
            codes: &[303],
            new_nick: Some(nick),
            ..Announce::default()
        };
        self.announce(ctx, &old, &leaving, &mut fx.out);
        // Every session of the occupant goes with it.
        for s in self.occupants.iter_mut().filter(|s| same_occupant(s, &old)) {
            s.nick = nick.to_owned();
            s.key = key.clone();
        }
        let o = &mut self.occupants[i];
        o.presence = clean_presence(stanza);
        let o = o.clone();
        self.announce(ctx, &o, &Announce::default(), &mut fx.out);
    }

    /// Take occupant `i` out and tell everyone, itself included.
    fn remove(&mut self, ctx: &Ctx, i: usize, mut a: Announce, out: &mut Vec<Out>) {
        let o = self.occupants.remove(i);
        a.unavailable = true;
        self.announce(ctx, &o, &a, out);
    }

    /// Session `i` leaves by itself. While another session of the same occupant stays, only
    /// the leaving one hears it (the others still see the occupant, now as that session).
    fn leave(&mut self, ctx: &Ctx, i: usize, mut a: Announce, out: &mut Vec<Out>) {
        let o = &self.occupants[i];
        let stays = self
            .occupants
            .iter()
            .position(|s| s.jid != o.jid && same_occupant(s, o));
        let Some(stays) = stays else {
            return self.remove(ctx, i, a, out);
        };
        let o = self.occupants.remove(i);
        a.unavailable = true;
        if !a.skip_self {
            let mut p = self.presence_of(ctx, &o, &a, true, true);
            p.set_attr("to", o.jid.as_str());
            out.push(Out::Send(p));
        }
        let stays = self.occupants[if stays > i { stays - 1 } else { stays }].clone();
        let update = Announce {
            skip_self: true,
            ..Announce::default()
        };
        self.announce(ctx, &stays, &update, out);
    }

    /// Take out every session of the occupant `i` (a kick, a ban, a removal): each session
    /// hears of its own removal, everyone else once.
    fn remove_all(&mut self, ctx: &Ctx, i: usize, a: Announce, out: &mut Vec<Out>) {
        let target = self.occupants[i].clone();
        while let Some(j) = self
            .occupants
            .iter()
            .position(|s| s.jid != target.jid && same_occupant(s, &target))
        {
            let s = self.occupants.remove(j);
            let mut gone = a.clone();
            gone.unavailable = true;
            let mut p = self.presence_of(ctx, &s, &gone, true, true);
            p.set_attr("to", s.jid.as_str());
            out.push(Out::Send(p));
        }
        if let Some(i) = self.by_jid(&target.jid) {
            self.remove(ctx, i, a, out);
        }
    }

    /// The session of `jid` ended without telling the room: it leaves.
    pub fn gone(&mut self, ctx: &Ctx, jid: &FullJid) -> Effects {
        let mut fx = Effects::default();
        if let Some(i) = self.by_jid(jid) {
            let a = Announce {
                skip_self: true,
                ..Announce::default()
            };
            self.leave(ctx, i, a, &mut fx.out);
        }
        fx
    }

    // -----------------------------------------------------------------------------------------
    // Messages (§7.4, §7.5, §7.8, §8.1)

    /// A message to the room's bare JID.
    pub fn message(&mut self, ctx: &Ctx, from: &FullJid, stanza: &Element) -> Effects {
        let mut fx = Effects::default();
        match stanza.attr("type") {
            Some("groupchat") => self.groupchat(ctx, from, stanza, &mut fx),
            Some("error") => {}
            _ => match stanza.child("x", NS_MUC_USER) {
                Some(x) if x.has_child("invite", NS_MUC_USER) => {
                    self.invite(ctx, from, stanza, x, &mut fx)
                }
                Some(x) if x.has_child("decline", NS_MUC_USER) => self.decline(from, x, &mut fx),
                _ => fx.out = error_to(stanza, StanzaError::new(Cond::BadRequest)),
            },
        }
        fx
    }

    fn groupchat(&mut self, ctx: &Ctx, from: &FullJid, stanza: &Element, fx: &mut Effects) {
        let Some(i) = self.by_jid(from) else {
            fx.out = error_to(stanza, StanzaError::new(Cond::NotAcceptable));
            return;
        };
        let sender = &self.occupants[i];
        // §7.4: visitors of a moderated room have no voice.
        if sender.role < Role::Participant {
            fx.out = error_to(stanza, StanzaError::new(Cond::Forbidden));
            return;
        }
        let is_subject =
            stanza.has_child("subject", NS_CLIENT) && !stanza.has_child("body", NS_CLIENT);
        // §8.1: moderators change the subject, participants too if the room allows it.
        if is_subject && sender.role != Role::Moderator && !self.config.change_subject {
            fx.out = error_to(stanza, StanzaError::new(Cond::Forbidden));
            return;
        }
        let mut reflected = stanza.clone();
        reflected.remove_attr("to");
        reflected.set_attr("from", self.occupant_jid(&sender.nick));
        // XEP-0359 §5: only the room itself says what its stanza-id is.
        mam::rules::strip_stanza_ids(&mut reflected, self.jid.as_str());
        // XEP-0421 §4: only the room's occupant id, never one the sender wrote.
        while reflected
            .remove_child("occupant-id", NS_OCCUPANT_ID)
            .is_some()
        {}
        reflected
            .push(Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", sender.id.as_str()));
        if self.config.archiving(ctx.archiving) && mam::rules::archivable_groupchat(&reflected) {
            let sender = sender.jid.clone();
            let entry = self.archived(ctx, &sender, &reflected);
            reflected.push(mam::rules::stanza_id(self.jid.as_str(), &entry.id));
            fx.archive = Some(entry);
        }
        if is_subject {
            self.subject = Some(reflected.clone());
            if self.config.persistent {
                fx.save = Some(Save::Room);
            }
        } else if reflected.has_child("body", NS_CLIENT) {
            let jid = self.jid.to_string();
            self.history
                .push(&jid, &reflected, ctx.now_us, self.config.history as usize);
        }
        let all = self.occupants.iter().map(|o| o.jid.clone()).collect();
        fx.out.push(Out::Fanout(Fanout::new(&reflected), all));
    }

    /// The archive entry of `reflected`, sent by `sender`: the message as the room sends it,
    /// with the sender's real bare JID added for those who may see it (and no `muc#user`
    /// `<x/>` the sender wrote, which could claim another JID).
    fn archived(&mut self, ctx: &Ctx, sender: &FullJid, reflected: &Element) -> ArchivedMessage {
        let stamp_us = ctx.now_us.max(self.last_archived_us.saturating_add(1));
        self.last_archived_us = stamp_us;
        let mut stored = reflected.clone();
        while stored.remove_child("x", NS_MUC_USER).is_some() {}
        stored.push(Element::new("x", NS_MUC_USER).with_child(
            Element::new("item", NS_MUC_USER).with_attr("jid", sender.to_bare().as_str()),
        ));
        ArchivedMessage {
            owner: self.jid.to_string(),
            id: mam::id::new(stamp_us),
            stamp_us,
            // The occupant JID: `with` filters a room's archive by nickname.
            with: reflected.attr("from").unwrap_or_default().to_owned(),
            outgoing: false,
            xml: stored.to_xml(),
        }
    }

    /// XEP-0313 §5.1.2: who may query the archive, and whether they see real JIDs. Banned
    /// users never; in a members-only room, members and above; in a password-protected
    /// room, members and above or those in the room (the query cannot carry the password);
    /// otherwise anyone who may join. Real JIDs as in the room: to everyone when it is
    /// non-anonymous, else to moderators (admins and owners, present or not).
    pub fn archive_access(&self, ctx: &Ctx, from: &FullJid) -> Result<bool, StanzaError> {
        if !self.config.archiving(ctx.archiving) {
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        let aff = self.affiliation(ctx, from.to_bare().as_str());
        let present = self.by_jid(from).map(|i| &self.occupants[i]);
        let may = match aff {
            Affiliation::Outcast => false,
            a if a >= Affiliation::Member => true,
            _ if self.config.members_only || self.locked => false,
            _ if self.config.password.is_some() => present.is_some(),
            _ => true,
        };
        if !may {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        Ok(self.config.whois == Whois::Anyone
            || aff >= Affiliation::Admin
            || present.is_some_and(|o| o.role == Role::Moderator))
    }

    /// §7.8.2 mediated invitations: the room passes each `<invite/>` on, from itself.
    fn invite(
        &mut self,
        ctx: &Ctx,
        from: &FullJid,
        stanza: &Element,
        x: &Element,
        fx: &mut Effects,
    ) {
        if self.by_jid(from).is_none() {
            fx.out = error_to(stanza, StanzaError::new(Cond::NotAcceptable));
            return;
        }
        let inviter_aff = self.affiliation(ctx, from.to_bare().as_str());
        let mut added = Vec::new();
        for inv in x.elements().filter(|e| e.is("invite", NS_MUC_USER)) {
            let Some(to) = inv.attr("to").and_then(|t| Jid::new(t).ok()) else {
                fx.out = error_to(stanza, StanzaError::new(Cond::JidMalformed));
                return;
            };
            if self.config.members_only {
                // Admins and owners, or members when the room lets them, invite — and the
                // invitee becomes a member (§7.8.2).
                let may = inviter_aff >= Affiliation::Admin
                    || (self.config.allow_invites && inviter_aff >= Affiliation::Member);
                if !may {
                    fx.out = error_to(stanza, StanzaError::new(Cond::Forbidden));
                    return;
                }
                let bare = to.to_bare().to_string();
                if self.affiliation(ctx, &bare) < Affiliation::Member
                    && self.affiliation(ctx, &bare) != Affiliation::Outcast
                {
                    if self.affiliations.len() >= ctx.limits.max_affiliations {
                        fx.out = error_to(stanza, StanzaError::new(Cond::ResourceConstraint));
                        return;
                    }
                    self.set_affiliation(bare.clone(), Affiliation::Member, None);
                    added.push((bare, Affiliation::Member, None));
                }
            }
            let mut passed = Element::new("invite", NS_MUC_USER).with_attr("from", from.as_str());
            if let Some(r) = inv.child("reason", NS_MUC_USER) {
                passed.push(r.clone());
            }
            let mut x = Element::new("x", NS_MUC_USER).with_child(passed);
            if let Some(p) = &self.config.password {
                x.push(Element::new("password", NS_MUC_USER).with_text(p));
            }
            let m = Element::new("message", NS_CLIENT)
                .with_attr("from", self.jid.as_str())
                .with_attr("to", to.as_str())
                .with_child(x)
                .with_child(Element::new("body", NS_CLIENT).with_text(format!(
                    "{} invites you to the room {}",
                    from.to_bare(),
                    self.jid
                )));
            fx.out.push(Out::Send(m));
        }
        if !added.is_empty() && self.config.persistent {
            fx.save = Some(Save::Affiliations(added));
        }
    }

    /// §7.8.2: a decline goes back to the inviter, who must be in the room (so the room cannot
    /// be used to send anything to anyone).
    fn decline(&mut self, from: &FullJid, x: &Element, fx: &mut Effects) {
        let Some(d) = x.child("decline", NS_MUC_USER) else {
            return;
        };
        let Some(to) = d.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return;
        };
        let Some(inviter) = self
            .occupants
            .iter()
            .find(|o| o.jid.to_bare() == to.to_bare())
        else {
            return;
        };
        let mut passed =
            Element::new("decline", NS_MUC_USER).with_attr("from", from.to_bare().as_str());
        if let Some(r) = d.child("reason", NS_MUC_USER) {
            passed.push(r.clone());
        }
        let m = Element::new("message", NS_CLIENT)
            .with_attr("from", self.jid.as_str())
            .with_attr("to", inviter.jid.as_str())
            .with_child(Element::new("x", NS_MUC_USER).with_child(passed));
        fx.out.push(Out::Send(m));
    }

    /// §7.5: a message to `room/nick`, passed to that occupant from the sender's occupant JID.
    pub fn private_message(&mut self, from: &FullJid, nick: &str, stanza: &Element) -> Effects {
        let mut fx = Effects::default();
        match stanza.attr("type") {
            Some("error") => return fx,
            Some("groupchat") => {
                fx.out = error_to(stanza, StanzaError::new(Cond::BadRequest));
                return fx;
            }
            _ => {}
        }
        let Some(sender) = self.by_jid(from) else {
            fx.out = error_to(stanza, StanzaError::new(Cond::NotAcceptable));
            return fx;
        };
        if self.by_nick(nick).is_none() {
            fx.out = error_to(stanza, StanzaError::new(Cond::ItemNotFound));
            return fx;
        }
        let mut m = stanza.clone();
        m.set_attr("from", self.occupant_jid(&self.occupants[sender].nick));
        if !m.has_child("x", NS_MUC_USER) {
            m.push(Element::new("x", NS_MUC_USER));
        }
        // Every session of the occupant gets it.
        for o in self.occupants.iter().filter(|o| o.nick == nick) {
            let mut copy = m.clone();
            copy.set_attr("to", o.jid.as_str());
            fx.out.push(Out::Send(copy));
        }
        fx
    }

    /// An IQ to `room/nick`: XEP-0410 self-ping is answered here; other requests go to the
    /// occupant, and its answers come back to the requester.
    pub fn occupant_iq(&mut self, from: &FullJid, nick: &str, stanza: &Element) -> Effects {
        let mut fx = Effects::default();
        let request = matches!(stanza.attr("type"), Some("get" | "set"));
        let sender = self.by_jid(from);
        if !request {
            // An answer from the occupant asked (`from`) to the one who asked (`nick`).
            if let (Some(s), Some(t)) = (sender, self.by_nick(nick)) {
                let mut answer = stanza.clone();
                answer.set_attr("from", self.occupant_jid(&self.occupants[s].nick));
                answer.set_attr("to", self.occupants[t].jid.as_str());
                fx.out.push(Out::Send(answer));
            }
            return fx;
        }
        let Some(s) = sender else {
            // XEP-0410 §3: not joined (under any nick).
            fx.out = error_to(stanza, StanzaError::new(Cond::NotAcceptable));
            return fx;
        };
        let Some(t) = self.by_nick(nick) else {
            fx.out = error_to(stanza, StanzaError::new(Cond::ItemNotFound));
            return fx;
        };
        if s == t
            && stanza
                .first_element()
                .is_some_and(|p| p.is("ping", NS_PING))
        {
            fx.out.push(Out::Send(iq_result(stanza, None)));
            return fx;
        }
        let mut forwarded = stanza.clone();
        forwarded.set_attr("from", self.occupant_jid(&self.occupants[s].nick));
        forwarded.set_attr("to", self.occupants[t].jid.as_str());
        fx.out.push(Out::Send(forwarded));
        fx
    }

    // -----------------------------------------------------------------------------------------
    // IQs to the room (§6.4, §8–§10)

    /// An IQ request to the room's bare JID. `from` is the requester's full JID.
    pub fn iq(&mut self, ctx: &Ctx, from: &FullJid, stanza: &Element) -> Effects {
        let mut fx = Effects::default();
        if !matches!(stanza.attr("type"), Some("get" | "set")) {
            return fx;
        }
        let set = stanza.attr("type") == Some("set");
        let Some(payload) = stanza.first_element() else {
            fx.out = error_to(stanza, StanzaError::new(Cond::BadRequest));
            return fx;
        };
        let result = match (payload.ns.as_str(), set) {
            (NS_DISCO_INFO, false) if payload.attr("node") == Some(register::NODE_ROOMUSER) => {
                let nick = self.reserved_nick(from.to_bare().as_str());
                Ok(Some(register::roomuser_item(nick)))
            }
            (NS_DISCO_INFO, false) => Ok(self.disco_info(ctx)),
            (NS_REGISTER, _) => self.register(ctx, from, payload, set, &mut fx),
            (NS_DISCO_ITEMS, false) => Ok(Some(Element::new("query", NS_DISCO_ITEMS))),
            (NS_PING, false) => Ok(None),
            (NS_MUC_ADMIN, false) => self.admin_get(ctx, from, payload),
            (NS_MUC_ADMIN, true) => self.admin_set(ctx, from, payload, &mut fx),
            (NS_MUC_OWNER, false) => self.owner_get(ctx, from),
            (NS_MUC_OWNER, true) => self.owner_set(ctx, from, payload, &mut fx),
            (mam::NS_MAM, _) if payload.name == "query" => {
                match self.archive_access(ctx, from) {
                    Ok(_) if !set => Ok(Some(mam::query_form())),
                    Ok(reveal_jids) => {
                        // Answered from storage once the room is unlocked.
                        fx.read = Some(ArchiveRead {
                            iq: stanza.clone(),
                            reveal_jids,
                        });
                        return fx;
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Err(StanzaError::new(Cond::ServiceUnavailable)),
        };
        match result {
            // The answer goes first: the requester hears "done" before the broadcasts.
            Ok(payload) => fx.out.insert(0, Out::Send(iq_result(stanza, payload))),
            Err(e) => {
                fx.out = error_to(stanza, e);
                fx.save = None;
            }
        }
        fx
    }

    fn disco_info(&self, ctx: &Ctx) -> Option<Element> {
        let mut q = Element::new("query", NS_DISCO_INFO).with_child(
            Element::new("identity", NS_DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr(
                    "name",
                    if self.config.name.is_empty() {
                        self.jid.node().map(|n| n.as_str()).unwrap_or_default()
                    } else {
                        &self.config.name
                    },
                ),
        );
        let mut features = vec![
            NS_MUC,
            NS_REGISTER,
            NS_OCCUPANT_ID,
            NS_MUC_SELF_PING,
            NS_DISCO_INFO,
            NS_PING,
        ];
        features.extend(self.config.features());
        if self.config.archiving(ctx.archiving) {
            features.extend([mam::NS_MAM, mam::NS_MAM_EXTENDED, NS_STANZA_ID]);
        }
        features.sort_unstable();
        for f in features {
            q.push(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
        }
        // §6.4 extended room information.
        let mut form = Element::new("x", NS_DATA_FORMS).with_attr("type", "result");
        let fields = [
            ("FORM_TYPE", NS_MUC_ROOMINFO.to_owned()),
            ("muc#roominfo_description", self.config.description.clone()),
            ("muc#roominfo_occupants", self.occupants.len().to_string()),
            (
                "muc#roominfo_subject",
                self.subject
                    .as_ref()
                    .and_then(|s| s.child("subject", NS_CLIENT))
                    .map(Element::text)
                    .unwrap_or_default(),
            ),
            (
                "muc#roomconfig_changesubject",
                if self.config.change_subject { "1" } else { "0" }.to_owned(),
            ),
        ];
        for (var, value) in fields {
            form.push(
                Element::new("field", NS_DATA_FORMS)
                    .with_attr("var", var)
                    .with_child(Element::new("value", NS_DATA_FORMS).with_text(value)),
            );
        }
        q.push(form);
        Some(q)
    }

    /// §9.5, §9.8, §10.5, §10.8 (affiliation lists) and §8.5, §9.8 (role lists).
    fn admin_get(
        &self,
        ctx: &Ctx,
        from: &FullJid,
        query: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        let item = query
            .child("item", NS_MUC_ADMIN)
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let mut answer = Element::new("query", NS_MUC_ADMIN);
        if let Some(aff) = item.attr("affiliation") {
            let aff = Affiliation::parse(aff)
                .filter(|a| *a != Affiliation::None)
                .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
            if self.affiliation(ctx, from.to_bare().as_str()) < Affiliation::Admin {
                return Err(StanzaError::new(Cond::Forbidden));
            }
            for (jid, a, reason) in self.affiliation_list() {
                if a != aff {
                    continue;
                }
                let mut it = Element::new("item", NS_MUC_ADMIN)
                    .with_attr("affiliation", a.name())
                    .with_attr("jid", jid.as_str());
                if let Some(nick) = self.reserved_nick(&jid) {
                    it.set_attr("nick", nick);
                }
                if let Some(r) = reason {
                    it.push(Element::new("reason", NS_MUC_ADMIN).with_text(r));
                }
                answer.push(it);
            }
        } else if let Some(role) = item.attr("role") {
            let role = Role::parse(role)
                .filter(|r| *r != Role::None)
                .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
            let asker = self.by_jid(from).map(|i| &self.occupants[i]);
            if asker.is_none_or(|a| a.role != Role::Moderator) {
                return Err(StanzaError::new(Cond::Forbidden));
            }
            for o in self.occupants.iter().filter(|o| o.role == role) {
                answer.push(
                    Element::new("item", NS_MUC_ADMIN)
                        .with_attr("role", role.name())
                        .with_attr("nick", o.nick.as_str())
                        .with_attr("jid", o.jid.as_str())
                        .with_attr(
                            "affiliation",
                            self.affiliation(ctx, o.jid.to_bare().as_str()).name(),
                        ),
                );
            }
        } else {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        Ok(Some(answer))
    }

    /// §8.2–§8.6, §9.1–§9.8, §10.3–§10.7: every item checked first, then all applied.
    fn admin_set(
        &mut self,
        ctx: &Ctx,
        from: &FullJid,
        query: &Element,
        fx: &mut Effects,
    ) -> Result<Option<Element>, StanzaError> {
        let actor_aff = self.affiliation(ctx, from.to_bare().as_str());
        let actor = self.by_jid(from).map(|i| self.occupants[i].clone());
        let actor_role = actor.as_ref().map(|a| a.role).unwrap_or(Role::None);
        let refusal = |r: RoleRefusal| match r {
            RoleRefusal::Forbidden => StanzaError::new(Cond::Forbidden),
            RoleRefusal::NotAllowed => StanzaError::new(Cond::NotAllowed),
        };
        let mut roles: Vec<(String, Role, Option<String>)> = Vec::new();
        let mut affs: Vec<(String, Affiliation, Option<String>)> = Vec::new();
        // §9.3: a member granted by JID may get a reserved nickname with it.
        let mut nicks: Vec<(String, String)> = Vec::new();
        for item in query.elements().filter(|e| e.is("item", NS_MUC_ADMIN)) {
            let reason = item.child("reason", NS_MUC_ADMIN).map(Element::text);
            if let Some(aff) = item.attr("affiliation") {
                let new =
                    Affiliation::parse(aff).ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
                // By JID, or by the nick of someone present.
                let jid = match (item.attr("jid"), item.attr("nick")) {
                    (Some(j), _) => BareJid::new(j)
                        .or_else(|_| Jid::new(j).map(|j| j.to_bare()))
                        .map_err(|_| StanzaError::new(Cond::JidMalformed))?
                        .to_string(),
                    (None, Some(n)) => self
                        .by_nick(n)
                        .map(|i| self.occupants[i].jid.to_bare().to_string())
                        .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?,
                    (None, None) => return Err(StanzaError::new(Cond::BadRequest)),
                };
                let old = self.affiliation(ctx, &jid);
                may_set_affiliation(actor_aff, old, new).map_err(refusal)?;
                if ctx.admins.contains(&jid) && new != Affiliation::Owner {
                    return Err(StanzaError::new(Cond::NotAllowed)
                        .with_text("a server administrator owns every room"));
                }
                if let (Some(_), Some(nick), true) = (
                    item.attr("jid"),
                    item.attr("nick"),
                    new >= Affiliation::Member,
                ) {
                    let taken = self.reserved_for_another(nick, &jid)
                        || nicks
                            .iter()
                            .any(|(j, n)| *j != jid && nick_key(n) == nick_key(nick));
                    if !valid_nick(nick, ctx.limits.max_nick_chars) {
                        return Err(StanzaError::new(Cond::NotAcceptable)
                            .with_text("this nickname is not allowed"));
                    }
                    if taken {
                        return Err(StanzaError::new(Cond::Conflict)
                            .with_text("this nickname is reserved for someone else"));
                    }
                    nicks.push((jid.clone(), nick.to_owned()));
                }
                affs.push((jid, new, reason));
            } else if let (Some(role), Some(nick)) = (item.attr("role"), item.attr("nick")) {
                let new = Role::parse(role).ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
                let i = self
                    .by_nick(nick)
                    .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?;
                let target = &self.occupants[i];
                let target_aff = self.affiliation(ctx, target.jid.to_bare().as_str());
                may_set_role((actor_aff, actor_role), (target_aff, target.role), new)
                    .map_err(refusal)?;
                roles.push((nick.to_owned(), new, reason));
            } else {
                return Err(StanzaError::new(Cond::BadRequest));
            }
        }
        // §10.6: the last owner stays.
        if !affs.is_empty() {
            let mut owners: Vec<&String> = self
                .affiliations
                .iter()
                .filter(|(_, (a, _))| *a == Affiliation::Owner)
                .map(|(j, _)| j)
                .collect();
            for (jid, new, _) in &affs {
                owners.retain(|o| *o != jid);
                if *new == Affiliation::Owner {
                    owners.push(jid);
                }
            }
            let had_owner = self
                .affiliations
                .values()
                .any(|(a, _)| *a == Affiliation::Owner);
            if had_owner && owners.is_empty() {
                return Err(StanzaError::new(Cond::Conflict).with_text("a room needs an owner"));
            }
            let mut after: std::collections::HashSet<&str> =
                self.affiliations.keys().map(String::as_str).collect();
            for (jid, new, _) in &affs {
                if *new == Affiliation::None {
                    after.remove(jid.as_str());
                } else {
                    after.insert(jid.as_str());
                }
            }
            if after.len() > ctx.limits.max_affiliations {
                return Err(StanzaError::new(Cond::ResourceConstraint));
            }
        }
        let actor_nick = actor.as_ref().map(|a| a.nick.clone());
        let actor_nick = actor_nick.as_deref();
        for (nick, role, reason) in roles {
            let Some(i) = self.by_nick(&nick) else {
                continue;
            };
            if role == Role::None {
                let a = Announce {
                    codes: &[307],
                    actor: actor_nick,
                    reason: reason.as_deref(),
                    ..Announce::default()
                };
                self.remove_all(ctx, i, a, &mut fx.out);
            } else if self.occupants[i].role != role {
                let o = self.occupants[i].clone();
                for s in self.occupants.iter_mut().filter(|s| same_occupant(s, &o)) {
                    s.role = role;
                }
                let o = self.occupants[i].clone();
                let a = Announce {
                    actor: actor_nick,
                    reason: reason.as_deref(),
                    ..Announce::default()
                };
                self.announce(ctx, &o, &a, &mut fx.out);
            }
        }
        for (jid, aff, reason) in &affs {
            self.set_affiliation(jid.clone(), *aff, reason.clone());
            self.apply_affiliation(ctx, jid, *aff, actor_nick, reason.as_deref(), &mut fx.out);
        }
        for (jid, nick) in nicks {
            // The last item of a JID decides its affiliation: only members and above keep one.
            self.reserve_nick(jid, nick);
        }
        if !affs.is_empty() && self.config.persistent {
            fx.save = Some(Save::Affiliations(affs));
        }
        Ok(None)
    }

    /// What a new affiliation does to the user's occupants: a ban (301) or losing membership
    /// of a members-only room (321) removes them, anything else may change their role.
    fn apply_affiliation(
        &mut self,
        ctx: &Ctx,
        jid: &str,
        aff: Affiliation,
        actor: Option<&str>,
        reason: Option<&str>,
        out: &mut Vec<Out>,
    ) {
        let mut i = 0;
        while i < self.occupants.len() {
            if self.occupants[i].jid.to_bare().as_str() != jid {
                i += 1;
                continue;
            }
            let removal: &[u16] = if aff == Affiliation::Outcast {
                &[301]
            } else if self.config.members_only && aff < Affiliation::Member {
                &[321]
            } else {
                &[]
            };
            if !removal.is_empty() {
                let a = Announce {
                    codes: removal,
                    actor,
                    reason,
                    ..Announce::default()
                };
                self.remove_all(ctx, i, a, out);
                continue;
            }
            self.occupants[i].role = default_role(aff, self.config.moderated);
            let o = self.occupants[i].clone();
            self.announce(ctx, &o, &Announce::default(), out);
            i += 1;
        }
    }

    /// §7.10: registration makes the user a member (if it was not one, or more) with a
    /// reserved nickname; `<remove/>` gives both up (admins and owners keep their
    /// affiliation). Banned users may not; in a members-only room only members (and above)
    /// may, since registering would otherwise let anyone in.
    fn register(
        &mut self,
        ctx: &Ctx,
        from: &FullJid,
        query: &Element,
        set: bool,
        fx: &mut Effects,
    ) -> Result<Option<Element>, StanzaError> {
        let bare = from.to_bare().to_string();
        let aff = self.affiliation(ctx, &bare);
        if self.locked && aff != Affiliation::Owner {
            // §10.1.1: a room waiting for its configuration is not there for anyone else.
            return Err(StanzaError::new(Cond::ItemNotFound));
        }
        if aff == Affiliation::Outcast {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let closed = self.config.members_only && aff < Affiliation::Member;
        let request = register::parse(query, set, ctx.limits.max_nick_chars)?;
        let new_aff = match &request {
            register::Request::Form => {
                let registered = self.reserved_nick(&bare);
                if closed && registered.is_none() {
                    return Err(not_open_for_registration());
                }
                return Ok(Some(register::form(registered)));
            }
            register::Request::Cancel => return Ok(None),
            register::Request::Remove => {
                if self.reserved_nick(&bare).is_none() && aff != Affiliation::Member {
                    // Nothing registered: nothing to give up.
                    return Ok(None);
                }
                self.reserved.release(&bare);
                if aff == Affiliation::Member {
                    Affiliation::None
                } else {
                    aff
                }
            }
            register::Request::Register(nick) => {
                if closed {
                    return Err(not_open_for_registration());
                }
                let in_use = self
                    .occupants
                    .iter()
                    .any(|o| o.key == nick_key(nick) && o.jid.to_bare().as_str() != bare);
                if in_use || self.reserved_for_another(nick, &bare) {
                    return Err(StanzaError::new(Cond::Conflict)
                        .with_text("this nickname is someone else's"));
                }
                if aff == Affiliation::None {
                    if self.affiliations.len() >= ctx.limits.max_affiliations {
                        return Err(StanzaError::new(Cond::ResourceConstraint));
                    }
                    // Admins of the server own every room but are not listed.
                    self.set_affiliation(bare.clone(), Affiliation::Member, None);
                }
                if !self.affiliations.contains_key(&bare) {
                    return Err(StanzaError::new(Cond::NotAllowed)
                        .with_text("a server administrator needs no registration"));
                }
                self.reserved.reserve(bare.clone(), nick.clone());
                aff.max(Affiliation::Member)
            }
        };
        if new_aff != aff {
            self.set_affiliation(bare.clone(), new_aff, None);
            self.apply_affiliation(ctx, &bare, new_aff, None, None, &mut fx.out);
        }
        if self.config.persistent {
            let reason = self.affiliations.get(&bare).and_then(|(_, r)| r.clone());
            fx.save = Some(Save::Affiliations(vec![(bare, new_aff, reason)]));
        }
        Ok(None)
    }

    fn owner_get(&self, ctx: &Ctx, from: &FullJid) -> Result<Option<Element>, StanzaError> {
        if self.affiliation(ctx, from.to_bare().as_str()) != Affiliation::Owner {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        Ok(Some(Element::new("query", NS_MUC_OWNER).with_child(
            self.config.to_form(ctx.limits, ctx.archiving),
        )))
    }

    /// §10.1.2–§10.2 configuration (also unlocking a new room), §10.1.3 cancelling the first
    /// configuration, §10.9 destruction.
    fn owner_set(
        &mut self,
        ctx: &Ctx,
        from: &FullJid,
        query: &Element,
        fx: &mut Effects,
    ) -> Result<Option<Element>, StanzaError> {
        if self.affiliation(ctx, from.to_bare().as_str()) != Affiliation::Owner {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        if let Some(d) = query.child("destroy", NS_MUC_OWNER) {
            self.destroy(ctx, d, fx);
            return Ok(None);
        }
        let Some(form) = query.child("x", NS_DATA_FORMS) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        match form.attr("type") {
            Some("cancel") => {
                if self.locked {
                    self.destroy(ctx, &Element::new("destroy", NS_MUC_OWNER), fx);
                }
                return Ok(None);
            }
            Some("submit") => {}
            _ => return Err(StanzaError::new(Cond::BadRequest)),
        }
        let new = self.config.with_form(form, ctx.limits, ctx.archiving)?;
        let old = std::mem::replace(&mut self.config, new);
        let was_locked = std::mem::replace(&mut self.locked, false);
        self.history.truncate(self.config.history as usize);
        fx.save = match (old.persistent, self.config.persistent) {
            (false, true) => Some(Save::RoomAndAffiliations),
            (true, false) => Some(Save::Remove),
            (true, true) => Some(Save::Room),
            (false, false) => None,
        };
        // Roles follow a change of moderation for those without an affiliation.
        if old.moderated != self.config.moderated {
            for i in 0..self.occupants.len() {
                let aff = self.affiliation(ctx, self.occupants[i].jid.to_bare().as_str());
                if aff == Affiliation::None && self.occupants[i].role != Role::Moderator {
                    self.occupants[i].role = default_role(aff, self.config.moderated);
                }
            }
        }
        // §10.2: members-only now — everyone else is out (322).
        if self.config.members_only && !old.members_only {
            let mut i = 0;
            while i < self.occupants.len() {
                let aff = self.affiliation(ctx, self.occupants[i].jid.to_bare().as_str());
                if aff < Affiliation::Member {
                    let a = Announce {
                        codes: &[322],
                        ..Announce::default()
                    };
                    self.remove_all(ctx, i, a, &mut fx.out);
                } else {
                    i += 1;
                }
            }
        }
        if !was_locked && !self.occupants.is_empty() {
            // §10.2.1: a configuration change (104), and whether JIDs became public (172) or
            // not (173).
            let mut x = Element::new("x", NS_MUC_USER).with_child(status(104));
            if old.whois != self.config.whois {
                x.push(status(if self.config.whois == Whois::Anyone {
                    172
                } else {
                    173
                }));
            }
            let m = groupchat(self.jid.as_str()).with_child(x);
            let all = self.occupants.iter().map(|o| o.jid.clone()).collect();
            fx.out.push(Out::Fanout(Fanout::new(&m), all));
        }
        Ok(None)
    }

    /// §10.9: everyone is told, with the alternate venue and reason, and the room goes.
    fn destroy(&mut self, ctx: &Ctx, d: &Element, fx: &mut Effects) {
        let mut destroy = Element::new("destroy", NS_MUC_USER);
        if let Some(j) = d.attr("jid").and_then(|j| BareJid::new(j).ok()) {
            destroy.set_attr("jid", j.as_str());
        }
        if let Some(r) = d.child("reason", NS_MUC_OWNER) {
            destroy.push(Element::new("reason", NS_MUC_USER).with_text(r.text()));
        }
        while !self.occupants.is_empty() {
            let a = Announce {
                destroy: Some(destroy.clone()),
                ..Announce::default()
            };
            // Last first, so nobody hears of someone already told to leave.
            let last = self.occupants.len() - 1;
            self.remove_all(ctx, last, a, &mut fx.out);
        }
        self.config.persistent = false;
        self.locked = true;
        fx.save = Some(Save::Remove);
        fx.remove_archive = true;
    }
}

/// Two sessions of one occupant: the same user under the same nickname.
fn same_occupant(a: &Occupant, b: &Occupant) -> bool {
    a.nick == b.nick && a.jid.to_bare() == b.jid.to_bare()
}

/// §7.10: a members-only room takes registrations from its members only.
fn not_open_for_registration() -> StanzaError {
    StanzaError::new(Cond::NotAllowed).with_text("only members may register with this room")
}

/// What of an occupant's presence the room repeats: everything but the MUC elements it adds
/// itself (and any occupant id the client made up, XEP-0421 §4).
fn clean_presence(stanza: &Element) -> Element {
    let mut p = Element::new("presence", NS_CLIENT);
    for c in stanza.elements() {
        if c.ns == NS_MUC || c.ns == NS_MUC_USER || c.ns == NS_OCCUPANT_ID {
            continue;
        }
        p.push(c.clone());
    }
    p
}

/// The result of IQ `req` from whoever it was sent to.
pub fn iq_result(req: &Element, payload: Option<Element>) -> Element {
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
