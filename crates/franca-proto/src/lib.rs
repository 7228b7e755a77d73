//! Sans-IO XMPP protocol logic for Franca: pure functions and state machines over bytes and
//! elements, with no sockets, timers or async runtime, so they are tested deterministically in
//! memory (DESIGN §2).
//!
//! * [`c2s`] — the client-to-server stream negotiation state machine (RFC 6120 §4-§7), over
//!   TCP or with XMPP-over-WebSocket framing (RFC 7395).
//! * [`component`] — the accepting side of XEP-0114 external components (handshake,
//!   per-domain secrets, `from` checks).
//! * [`bosh`] — BOSH sessions for XMPP over HTTP (XEP-0124, XEP-0206).
//! * [`ns`] — namespace names of RFC 6120/6121 and the XEPs the server implements.
//! * [`errors`] — stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3), and the
//!   error-reply rules of §8.3.1.
//! * [`sasl`] — SCRAM-SHA-1/256/512 (+PLUS) and PLAIN server mechanisms (RFC 6120 §6,
//!   RFC 5802, RFC 7677, RFC 4616), channel binding (RFC 5929, RFC 9266, XEP-0440) and
//!   downgrade protection (XEP-0474).
//! * [`sasl2`], [`bind2`], [`fast`] — XEP-0388 SASL2, XEP-0386 Bind 2 and XEP-0484 FAST
//!   tokens with the HT-SHA-256 mechanisms: a reconnecting client authenticated, bound (or
//!   resumed) and set up in one round trip.
//! * [`sm`] — XEP-0198 stream management: acks, the unacknowledged queue, resumption.
//! * [`csi`] — XEP-0352 client state indication: which stanzas an inactive client gets now.
//! * [`dialback`] — XEP-0220 server dialback elements and XEP-0185 dialback keys.
//! * [`s2s`] — server-to-server stream headers, features, SASL EXTERNAL (XEP-0178) and the
//!   `jabber:server` ↔ `jabber:client` stanza namespace.
//! * [`jidprep`] — localpart and bare-JID preparation (RFC 6122 stringprep via the `jid`
//!   crate, RFC 7622 / RFC 8265 PRECIS).

pub mod bind2;
pub mod bosh;
pub mod c2s;
pub mod component;
pub mod csi;
pub mod dialback;
pub mod errors;
pub mod fast;
pub mod jidprep;
pub mod ns;
pub mod s2s;
pub mod sasl;
pub mod sasl2;
pub mod sm;
