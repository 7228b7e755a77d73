//! Domains reached over a connection instead of served here: XEP-0114 components, which connect
//! to us for a domain of their own, and RFC 6120 federation, which connects to other servers.
//! The router hands them a stanza only after it found that the `to` domain is neither served
//! nor a hosted service, so routing to accounts costs nothing more. franca-core knows only these
//! traits; the transports (`franca-net`, `franca-s2s`) implement them.

use crate::server::Server;
use async_trait::async_trait;
use franca_xml::Element;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// One connected component's outbound side.
pub trait ComponentLink: Send + Sync {
    /// Queue `stanza` for the component. `false` when it cannot take it (queue full, closing);
    /// the router then bounces the stanza.
    fn send(&self, stanza: &Element) -> bool;
}

/// A component is already connected for the domain (XEP-0114 §3: `conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyConnected;

/// The components connected now, by domain.
#[derive(Default)]
pub struct Components {
    links: RwLock<HashMap<String, Arc<dyn ComponentLink>>>,
}

impl Components {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<dyn ComponentLink>>> {
        self.links.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<dyn ComponentLink>>> {
        self.links.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Register `link` as the component for `domain`; one per domain.
    pub fn connect(
        &self,
        domain: &str,
        link: Arc<dyn ComponentLink>,
    ) -> Result<(), AlreadyConnected> {
        let mut links = self.write();
        if links.contains_key(domain) {
            return Err(AlreadyConnected);
        }
        links.insert(domain.to_owned(), link);
        Ok(())
    }

    /// Remove `domain`'s registration if it is still `link` (a newer connection is left alone).
    pub fn disconnect(&self, domain: &str, link: &Arc<dyn ComponentLink>) {
        let mut links = self.write();
        if links.get(domain).is_some_and(|l| Arc::ptr_eq(l, link)) {
            links.remove(domain);
        }
    }

    /// The component connected for `domain`, if any.
    pub fn get(&self, domain: &str) -> Option<Arc<dyn ComponentLink>> {
        self.read().get(domain).cloned()
    }

    /// The domains of the connected components, sorted (disco#items of a served domain).
    pub fn domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self.read().keys().cloned().collect();
        d.sort();
        d
    }
}

/// Server-to-server federation, as the router sees it.
#[async_trait]
pub trait Federation: Send + Sync {
    /// Send `stanza` (its `from` already trusted) to the remote `domain`: queue it while a
    /// connection is set up, and bounce it through [`Server::route`] with the RFC 6120 §8.3
    /// condition when that fails or policy refuses.
    async fn send(&self, server: &Arc<Server>, domain: &str, stanza: Element);

    /// Whether stanzas to `domain` may go out at all (policy), so modules skip work, such as
    /// presence probes, that could only bounce.
    fn reachable(&self, domain: &str) -> bool;
}

/// The slot the binary fills once at start with the federation layer, if s2s is enabled.
#[derive(Default)]
pub struct FederationSlot(OnceLock<Arc<dyn Federation>>);

impl FederationSlot {
    /// Set the federation layer. Only the first call has an effect.
    pub fn set(&self, f: Arc<dyn Federation>) {
        let _ = self.0.set(f);
    }

    pub fn get(&self) -> Option<&Arc<dyn Federation>> {
        self.0.get()
    }
}
