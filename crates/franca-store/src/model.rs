//! Plain data types that cross the storage boundary. JIDs are normalised strings here (the
//! caller normalises with `jid` before storing), so this crate does not depend on XMPP crates.

/// SCRAM credentials for one hash (RFC 5802 §3): never a plaintext password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentials {
    /// "SHA-1", "SHA-256" or "SHA-512".
    pub hash: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// RFC 6121 §2.1.2.5 subscription attribute as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
    pub fn parse(s: &str) -> Option<Subscription> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }
}

/// One roster item with the full RFC 6121 subscription state (Appendix A):
/// `subscription` plus the pending-out (`ask`), pending-in and pre-approval flags.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RosterItem {
    /// Bare JID of the contact.
    pub jid: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// Pending Out: we sent `subscribe` and have no answer yet (`ask='subscribe'`).
    pub ask: bool,
    /// Pending In: the contact asked to subscribe to us; the serialised `subscribe` stanza is
    /// kept so it can be re-delivered at the next login (RFC 6121 §3.1.3).
    pub pending_in: Option<String>,
    /// Pre-approved (RFC 6121 §3.4).
    pub approved: bool,
    pub groups: Vec<String>,
    /// Items that exist only because of state (pending-in without being in the user's roster)
    /// are hidden from roster results: RFC 6121 §3.1.3 says the server must not add the
    /// contact to the roster before the user approves.
    pub hidden: bool,
}

/// A whole roster as one value: what [`crate::Store::roster_shared`] hands out behind an `Arc`,
/// so readers that only look (presence broadcast, roster get) share one copy instead of each
/// getting their own.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Roster {
    /// The roster version (RFC 6121 §2.6) that `items` are the state of.
    pub version: i64,
    /// Every item, hidden ones included.
    pub items: Vec<RosterItem>,
}

/// A stored offline message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineMessage {
    pub id: i64,
    /// Microseconds since the Unix epoch when the server stored it (for the XEP-0203 stamp).
    pub stamp_us: i64,
    /// The stanza, serialised as XML with its jabber:client namespace declared.
    pub xml: String,
}

/// XEP-0012 last activity of an account that went offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastActivity {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    pub status: String,
}

/// One account brought in whole by a bulk import (`franca import`, XEP-0227): what
/// [`crate::Store::import_accounts`] writes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ImportedAccount {
    /// Bare JID.
    pub jid: String,
    /// SCRAM credentials, one per hash the source had (an account without any cannot log in
    /// until `franca user passwd` gives it a password).
    pub credentials: Vec<ScramCredentials>,
    pub roster: Vec<RosterItem>,
    /// (stamp in microseconds since the Unix epoch, serialised stanza), oldest first.
    pub offline: Vec<(i64, String)>,
    /// The serialised `<vCard xmlns='vcard-temp'/>`.
    pub vcard: Option<String>,
}

/// A XEP-0484 FAST token as stored: its SHA-256 hash, never the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct FastToken {
    /// The client it was issued to (its XEP-0388 user-agent id).
    pub client_id: String,
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// The HT mechanism it may be used with.
    pub mechanism: String,
    /// Microseconds since the Unix epoch after which it is refused.
    pub expires_us: i64,
    /// The highest replay counter accepted for it (0: none yet).
    pub count: u32,
    /// Issued and not used yet (XEP-0484's 'new' slot); a used token is the client's current one.
    pub new: bool,
}

impl std::fmt::Debug for FastToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastToken")
            .field("client_id", &self.client_id)
            .field("mechanism", &self.mechanism)
            .field("expires_us", &self.expires_us)
            .field("count", &self.count)
            .field("new", &self.new)
            .finish_non_exhaustive()
    }
}

/// A XEP-0357 push registration: an app server's push service (`jid`) and the node on it that
/// the account's notifications are published to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRegistration {
    /// The XMPP push service of the app server.
    pub jid: String,
    /// The PubSub node provisioned for the device.
    pub node: String,
    /// The serialised publish-options data form (`<x xmlns='jabber:x:data'/>`) the client
    /// gave when enabling, sent back with every notification (XEP-0357 §5).
    pub options: Option<String>,
}

/// A XEP-0060 PubSub node: its name and its configuration, serialised by the PubSub module
/// (the store does not read it). The owner it belongs to is passed alongside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubsubNode {
    pub node: String,
    pub config: String,
}

/// One published item of a PubSub node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubsubItem {
    /// The item id, unique within its node; publishing the same id again replaces the item.
    pub id: String,
    /// When it was published (µs since the Unix epoch); items are ordered by it.
    pub stamp_us: i64,
    /// The serialised `<item/>` payload element.
    pub xml: String,
}

/// One message in a XEP-0313 archive. The archive belongs to `owner`: an account's bare JID,
/// or later a room's JID, so the same table and methods serve both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    pub owner: String,
    /// The XEP-0359 stanza-id: unique per owner, and its byte order is the archive's order
    /// (the archiving module makes ids that sort by time; the store only relies on the order).
    pub id: String,
    /// When it was archived (µs since the Unix epoch).
    pub stamp_us: i64,
    /// The conversation partner's bare JID.
    pub with: String,
    /// True when the owner sent it.
    pub outgoing: bool,
    /// The serialised `<message/>`.
    pub xml: String,
}

/// What an archive query selects (XEP-0313 §4 filters with XEP-0059 paging). Ranges are on the
/// id, which is how the archive is ordered: the module turns `start`/`end` times into ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// Only messages with this bare JID.
    pub with: Option<String>,
    /// Only ids `>= from_id` (the filter's `start`).
    pub from_id: Option<String>,
    /// Only ids `< until_id` (the filter's `end`, exclusive).
    pub until_id: Option<String>,
    /// Paging cursor: only ids after this one (RSM `after`, XEP-0313 `after-id`).
    pub after: Option<String>,
    /// Paging cursor: only ids before this one (RSM `before`, XEP-0313 `before-id`).
    pub before: Option<String>,
    /// Only these ids (XEP-0313 `ids`); empty = no such filter.
    pub ids: Vec<String>,
    /// At most this many messages.
    pub max: u32,
    /// Take the last `max` matching messages instead of the first (RSM `<before/>`); the page
    /// is still returned oldest first.
    pub last_page: bool,
}

/// One page of an archive query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchivePage {
    /// Oldest first.
    pub messages: Vec<ArchivedMessage>,
    /// No more messages match beyond this page in the direction of paging.
    pub complete: bool,
    /// How many messages match the filters, cursors aside: exact up to
    /// [`crate::MAX_ARCHIVE_COUNT`], which is reported when there are more.
    pub count: u64,
}

/// XEP-0313 §7 archiving preferences of an account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchivePrefs {
    /// "always", "never" or "roster".
    pub default: String,
    /// Bare JIDs always archived.
    pub always: Vec<String>,
    /// Bare JIDs never archived.
    pub never: Vec<String>,
}

/// A persistent XEP-0045 room as stored.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MucRoom {
    /// The room's bare JID (`room@conference.example.org`).
    pub jid: String,
    /// The room's configuration, serialised by the MUC module (opaque here).
    pub config: String,
    /// The current subject, serialised by the MUC module; `None` when never set.
    pub subject: Option<String>,
    /// Microseconds since the Unix epoch when the room was first stored.
    pub created_us: i64,
    /// Owners, admins, members and outcasts, ordered by JID.
    pub affiliations: Vec<MucAffiliation>,
}

/// One entry of a room's affiliation lists (XEP-0045 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MucAffiliation {
    /// Bare JID of the user (or a domain, for a whole server).
    pub jid: String,
    /// `owner`, `admin`, `member` or `outcast`; `none` in [`Store::set_muc_affiliations`]
    /// removes the entry.
    ///
    /// [`Store::set_muc_affiliations`]: crate::Store::set_muc_affiliations
    pub affiliation: String,
    /// Why (for outcasts: the ban reason shown to the user).
    pub reason: Option<String>,
    /// The nickname reserved for the user in this room (XEP-0045 §7.10), if any.
    pub nick: Option<String>,
}
