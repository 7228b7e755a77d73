//! Black-box tests: they spawn the real `franca` binary (`$FRANCA_BIN`, else the one cargo built)
//! on free ports in a temporary directory and talk to it over TCP like any peer would.
//!
//! Storage is SQLite inside the temporary directory, or, when `FRANCA_TEST_PG_URL` is set, a fresh
//! PostgreSQL database per server (created through that URL; the role needs CREATEDB). With
//! `FRANCA_REQUIRE_PG=1` a missing URL is an error rather than a quiet fall-back to SQLite.
//!
//! - `hostile`: the hostile-input table of issue 2 §9: each case checks the stream error or stanza
//!   error, then that the server still serves a new session.
//! - `cli`: the `user` commands and their one-line errors.
//! - `config`: unknown keys are refused by name; `franca.example.toml` parses.
//! - `bosh`: XMPP over BOSH (XEP-0206): login and chat with a TCP client, rid replay and window,
//!   too many requests, unknown sid, oversize bodies, inactivity, limits, resumption (XEP-0198),
//!   SIGTERM, HTTPS.
//! - `lifecycle`: logins over STARTTLS and direct TLS, SIGTERM → `<system-shutdown/>`.
//! - `https`: the HTTP endpoints over TLS, `wss://` logins, CORS.
//! - `multiplex`: XMPP and HTTPS on one TLS port (ALPN, sniffing), garbage on that port.
//! - `sm`: XEP-0198 acknowledgements, resumption after a cut connection, the resumption timeout.
//! - `csi`: XEP-0352 holding and flushing for an inactive client.
//! - `sasl2`: XEP-0388 SASL2 with XEP-0386 Bind2 (inline carbons and stream management),
//!   resumption inside `<authenticate/>`, XEP-0484 FAST tokens (reconnect, replay, revocation,
//!   expiry).
//! - `mam`: XEP-0313 archives: paging both ways with stanza-ids, filters, preferences, an
//!   offline message archived once, capped `max`, bad forms, another account's archive.
//! - `pep`: XEP-0163 PEP notifications filtered by XEP-0115 caps, last item at presence,
//!   publish-options preconditions, access models, XEP-0049 private storage, XEP-0048 → XEP-0402.
//! - `push`: XEP-0357 notifications to an app server that is a client of this server, for an
//!   offline account and for a session hibernated by XEP-0198; disabling; error answers.
//! - `muc`: XEP-0045 group chat: discovery, two users in a room, nickname conflict, kick and
//!   ban, members-only, history on join, a persistent room across a restart.
//! - `muc_mam`: a room's XEP-0313 archive (stanza-ids, queries to the room JID, real JIDs,
//!   members-only refusal, capped `max`) and XEP-0045 registration with reserved nicknames,
//!   across a restart.
//! - `compliance`: the XEP-0479 Advanced Server self-check (Core and IM): each entry advertised
//!   and exercised, gaps reported as missing (the table is also in `docs/COMPLIANCE.md`).
//! - `pubsub`: the XEP-0060 service at `pubsub.localhost`: create, publish, subscribe and notify.
//! - `component`: XEP-0114: a raw-socket component handshakes, exchanges messages and IQs with
//!   a local user, is listed in disco; wrong secret, unknown domain, duplicate, spoofed `from`,
//!   oversize stanza and garbage get their stream errors.
//! - `fanout`: a groupchat message reaches occupants on TCP, WebSocket and BOSH, each copy
//!   addressed to its recipient (escaped) and otherwise the same bytes; also after XEP-0198
//!   resumption and through the XEP-0352 hold queue.
//! - `s2s`: federation between two Franca processes (`a.test`, `b.test`, static routes):
//!   dialback over STARTTLS and SASL EXTERNAL with a test CA, chat, subscriptions and presence,
//!   a remote MUC occupant, bounces and queueing, idle links, refusals by policy and per user.
//! - `upload`: XEP-0363 HTTP file upload: slot, PUT and GET, size, type, secret and quota refusals.
//! - `avatar`: XEP-0398 conversion: a XEP-0084 avatar seen as vCard PHOTO and presence hash, a
//!   vCard PHOTO published to PEP, bad and oversized PHOTOs refused, the hash in room presence.
//! - `s2s_hostile`: raw s2s peers (issue 6): spoofed `from`, stanzas before authentication, an
//!   invalid dialback key, a certificate for another name, a denied domain, a flood on one link.
//! - `s2s_push`: XEP-0357 notifications to an app server on another Franca, over federation.

mod avatar;
mod bosh;
mod cli;
mod client;
mod compliance;
mod component;
mod config;
mod csi;
mod fanout;
mod harness;
mod hostile;
mod https;
mod import;
mod lifecycle;
mod mam;
mod muc;
mod muc_mam;
mod multiplex;
mod pep;
mod pubsub;
mod push;
mod s2s;
mod s2s_hostile;
mod s2s_push;
mod sasl2;
mod sm;
mod upload;
mod websocket;
