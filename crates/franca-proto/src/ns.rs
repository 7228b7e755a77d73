//! XML namespace names (and a few related protocol tokens) used by the server.
//!
//! The values are the ones registered by RFC 6120 (XMPP Core: streams §4, STARTTLS §5, SASL §6,
//! resource binding §7, stanzas §8), RFC 6121 (IM: roster §2, roster versioning §2.6,
//! subscription pre-approval §3.4), the legacy session feature of RFC 3921 §3 as kept by
//! draft-cridland-xmpp-session, RFC 7395 (WebSocket framing) and the XMPP Registrar entries of
//! the XEPs named next to each constant. Where a XEP defines no namespace (XEP-0160, XEP-0368,
//! XEP-0474) the constant documents what is used instead.

// ---- RFC 6120 / RFC 6121 core -------------------------------------------------------------

/// Default namespace of client-to-server streams (RFC 6120 §4.8.3).
pub const NS_CLIENT: &str = "jabber:client";
/// Default namespace of server-to-server streams (RFC 6120 §4.8.3).
pub const NS_SERVER: &str = "jabber:server";
/// Namespace of the `<stream:stream/>`, `<stream:features/>` and `<stream:error/>` elements
/// (RFC 6120 §4.8.1). Same value as `franca_xml::NS_STREAMS`.
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// Defined conditions inside `<stream:error/>` (RFC 6120 §4.9.3).
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// STARTTLS negotiation (RFC 6120 §5).
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL negotiation (RFC 6120 §6).
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding (RFC 6120 §7).
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Legacy session establishment (RFC 3921 §3; advertised as `<optional/>` per
/// draft-cridland-xmpp-session so that old clients keep working).
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// Defined conditions inside stanza `<error/>` elements (RFC 6120 §8.3.3).
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// The `xml:` prefix namespace (`xml:lang`), XML Namespaces §3.
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// Roster management (RFC 6121 §2).
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// Roster versioning stream feature (RFC 6121 §2.6).
pub const NS_ROSTERVER: &str = "urn:xmpp:features:rosterver";
/// Subscription pre-approval stream feature (RFC 6121 §3.4).
pub const NS_PREAPPROVAL: &str = "urn:xmpp:features:pre-approval";

// ---- other stream-level namespaces -----------------------------------------------------------

/// Component protocol, accepting side (XEP-0114).
pub const NS_COMPONENT_ACCEPT: &str = "jabber:component:accept";
/// Server dialback (XEP-0220).
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// Dialback stream feature (XEP-0220 §2.4).
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// WebSocket framing `<open/>`/`<close/>` (RFC 7395 §3.3).
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// BOSH `<body/>` wrapper (XEP-0124).
pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// XMPP over BOSH attributes (XEP-0206).
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";
/// Stream management (XEP-0198, version 3).
pub const NS_SM: &str = "urn:xmpp:sm:3";
/// Client state indication (XEP-0352).
pub const NS_CSI: &str = "urn:xmpp:csi:0";
/// Extensible SASL profile: `<authentication/>`, `<authenticate/>`, `<success/>` (XEP-0388).
pub const NS_SASL2: &str = "urn:xmpp:sasl:2";
/// Resource binding inside SASL2 (XEP-0386 Bind 2).
pub const NS_BIND2: &str = "urn:xmpp:bind:0";
/// Fast Authentication Streamlining Tokens, inside SASL2 (XEP-0484).
pub const NS_FAST: &str = "urn:xmpp:fast:0";
/// SASL channel-binding type capability stream feature (XEP-0440).
pub const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// In-band registration stream feature (XEP-0077 §8).
pub const NS_REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// Entity capabilities `<c/>` in presence and stream features (XEP-0115).
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";

/// ALPN protocol id for direct-TLS client connections (XEP-0368 §3). XEP-0368 itself defines
/// no XML namespace; it only uses the `_xmpps-client` SRV service and this ALPN token.
pub const ALPN_XMPP_CLIENT: &str = "xmpp-client";
/// ALPN protocol id for direct-TLS server connections (XEP-0368 §3).
pub const ALPN_XMPP_SERVER: &str = "xmpp-server";

// XEP-0474 (SASL SCRAM Downgrade Protection) defines no namespace either: it only adds the
// SCRAM attribute `h` to the server-first-message, see `crate::sasl::ssdp_value`.

// ---- IQ payloads and stanza extensions -------------------------------------------------------

/// Service discovery, information (XEP-0030).
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Service discovery, items (XEP-0030).
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XMPP ping (XEP-0199).
pub const NS_PING: &str = "urn:xmpp:ping";
/// Entity time (XEP-0202).
pub const NS_TIME: &str = "urn:xmpp:time";
/// Software version (XEP-0092).
pub const NS_VERSION: &str = "jabber:iq:version";
/// Last activity (XEP-0012).
pub const NS_LAST: &str = "jabber:iq:last";
/// vcard-temp (XEP-0054).
pub const NS_VCARD: &str = "vcard-temp";
/// vCard-based avatar update in presence (XEP-0153).
pub const NS_VCARD_UPDATE: &str = "vcard-temp:x:update";
/// Blocking command (XEP-0191).
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
/// Application error `<blocked/>` for blocked communication (XEP-0191 §3.5).
pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// Message carbons (XEP-0280, namespace version 2).
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
/// Carbons disco feature telling clients that the server follows the XEP-0280 delivery rules
/// (XEP-0280 §9).
pub const NS_CARBONS_RULES: &str = "urn:xmpp:carbons:rules:0";
/// Stanza forwarding (XEP-0297).
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// Delayed delivery (XEP-0203).
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// In-band registration IQ payload (XEP-0077).
pub const NS_REGISTER: &str = "jabber:iq:register";
/// Offline message storage: XEP-0160 defines no namespace; servers advertise this disco
/// feature (registered for XEP-0160 §4) instead.
pub const NS_OFFLINE: &str = "msgoffline";
/// Flexible offline message retrieval (XEP-0013).
pub const NS_FLEX_OFFLINE: &str = "http://jabber.org/protocol/offline";
/// Message processing hints (XEP-0334).
pub const NS_HINTS: &str = "urn:xmpp:hints";
/// Data forms (XEP-0004).
pub const NS_DATA_FORMS: &str = "jabber:x:data";
/// Result set management (XEP-0059).
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
/// Unique and stable stanza IDs (XEP-0359).
pub const NS_STANZA_ID: &str = "urn:xmpp:sid:0";
/// Jingle Message Initiation: call signalling in messages (XEP-0353).
pub const NS_JINGLE_MESSAGE: &str = "urn:xmpp:jingle-message:0";
/// A second XEP-0353 namespace version seen from clients (also in `franca-im`'s carbons rules);
/// treated like [`NS_JINGLE_MESSAGE`].
pub const NS_JINGLE_MESSAGE_1: &str = "urn:xmpp:jingle-message:1";
/// Chat markers (XEP-0333).
pub const NS_CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// Message delivery receipts (XEP-0184).
pub const NS_RECEIPTS: &str = "urn:xmpp:receipts";
/// Chat state notifications (XEP-0085).
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// Publish-subscribe event notifications, as used by PEP (XEP-0060 §7.1.2, XEP-0163).
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// Explicit message encryption: names the scheme of an encrypted message (XEP-0380).
pub const NS_EME: &str = "urn:xmpp:eme:0";

// ---- XEP-0045 multi-user chat and its companions ----------------------------------------------

/// Multi-user chat: the join request `<x/>` in presence, and the service's disco feature
/// (XEP-0045 §7.2).
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// Occupant information in presence and messages from a room (XEP-0045 §7.2.3).
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Role and affiliation lists, kicks and bans (XEP-0045 §8–§9).
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// Room configuration and destruction (XEP-0045 §10).
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// FORM_TYPE of the room configuration form (XEP-0045 §10.2).
pub const NS_MUC_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// FORM_TYPE of the extended room information in disco#info (XEP-0045 §6.4).
pub const NS_MUC_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// Stable anonymous occupant identifiers (XEP-0421).
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// MUC self-ping: the service answers pings to one's own occupant JID (XEP-0410 §4).
pub const NS_MUC_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
/// Direct MUC invitations (XEP-0249), passed between users unchanged.
pub const NS_CONFERENCE: &str = "jabber:x:conference";
