//! The XEP-0060 Publish-Subscribe core: nodes with their configuration and access model,
//! persistent items with `max_items`, `publish-options` preconditions, retraction, purge and
//! deletion, and the `#event` notifications they produce. It knows nothing of who receives a
//! notification: XEP-0163 PEP ([`crate::pep`]) owns nodes under an account's bare JID and picks
//! recipients from presence subscriptions and entity capabilities; a standalone PubSub service
//! can reuse [`service::Service`] with its own JID as the owner key.
//!
//! - [`form`]: the XEP-0004 data forms these use (read with bounds, written for answers).
//! - [`config`]: `pubsub#node_config` fields, defaults, publish-options preconditions.
//! - [`access`]: who may see a node (`open`, `presence`, `roster`, `whitelist`).
//! - [`service`]: node and item operations over [`franca_store::Store`] for one owner.
//! - [`event`]: `<event/>` payloads and the error conditions of `pubsub#errors`.

pub mod access;
pub mod config;
pub mod event;
pub mod form;
pub mod service;

/// XEP-0060 namespaces.
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
pub const NS_PUBSUB_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
pub const NS_PUBSUB_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub use franca_proto::ns::NS_PUBSUB_EVENT;

/// Longest node name or item id accepted (bytes): real ones are URIs or hashes.
pub const MAX_NAME_BYTES: usize = 1024;
