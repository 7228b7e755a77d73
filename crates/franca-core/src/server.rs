//! The shared server context: configuration, storage, the session registry and the loaded
//! modules. Everything that handles a stanza gets an `Arc<Server>`.

use crate::config::Config;
use crate::detached::{Detached, Hibernated};
use crate::module::{HostedService, Module, Modules, SessionEvent};
use crate::session::{Bound, Session, Sessions};
use franca_store::Store;
use jid::{BareJid, FullJid};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Server {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub sessions: Sessions,
    pub modules: Modules,
    /// XEP-0198 sessions that can be resumed, some of them without a connection.
    pub detached: Detached,
    pub started: Instant,
    /// XEP-0363 upload slots and stored files, shared by the upload module and the HTTP routes.
    pub uploads: crate::upload::Uploads,
    /// Hosted service domains (`conference.example.org`) and the modules that answer them,
    /// sorted by domain.
    services: Vec<(HostedService, Arc<dyn Module>)>,
    /// XEP-0114 components connected now, by domain.
    pub components: crate::external::Components,
    /// RFC 6120 federation, when the binary enabled s2s.
    pub federation: crate::external::FederationSlot,
    /// Accounts removed while this server ran, with when: a stream that authenticated just
    /// before the removal must not bind after it. Kept only as long as negotiation may take.
    removed: Mutex<HashMap<BareJid, Instant>>,
}

impl Server {
    pub fn new(config: Config, store: Arc<dyn Store>, modules: Modules) -> Arc<Server> {
        let detached = Detached::new(config.stream_management.max_hibernated);
        let mut services: Vec<(HostedService, Arc<dyn Module>)> = Vec::new();
        for m in modules.iter() {
            for service in m.services(&config) {
                // Wiring bugs at start-up (the configuration is validated before this).
                assert!(
                    !config.serves(&service.domain),
                    "{} hosts {}, a served domain",
                    m.name(),
                    service.domain
                );
                if let Some((_, other)) = services.iter().find(|(s, _)| s.domain == service.domain)
                {
                    panic!(
                        "two modules host {}: {} and {}",
                        service.domain,
                        other.name(),
                        m.name()
                    );
                }
                services.push((service, m.clone()));
            }
        }
        services.sort_by(|a, b| a.0.domain.cmp(&b.0.domain));
        let uploads = crate::upload::Uploads::new(&config.server.data_dir);
        Arc::new(Server {
            uploads,
            config,
            store,
            sessions: Sessions::new(),
            detached,
            modules,
            started: Instant::now(),
            services,
            components: Default::default(),
            federation: Default::default(),
            removed: Mutex::default(),
        })
    }

    fn removed(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, Instant>> {
        self.removed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user` was removed recently enough that a stream which authenticated before the
    /// removal could still be negotiating. Binding asks this instead of storage: accounts are
    /// removed through the running server (`franca user remove` uses the control socket), and
    /// authentication itself has just read the credentials.
    pub fn removed_during_login(&self, user: &BareJid) -> bool {
        let window = self.negotiation_window();
        let mut removed = self.removed();
        removed.retain(|_, at| at.elapsed() < window);
        removed.contains_key(user)
    }

    fn negotiation_window(&self) -> Duration {
        // Twice the negotiation timeout: a stream past it has been closed.
        Duration::from_secs(
            self.config
                .limits
                .negotiation_timeout_seconds
                .saturating_mul(2),
        )
    }

    pub fn serves(&self, domain: &str) -> bool {
        self.config.serves(domain)
    }

    /// The module hosting service domain `domain`, if one does.
    pub fn service(&self, domain: &str) -> Option<&Arc<dyn Module>> {
        // A handful of services: a scan beats hashing.
        self.services
            .iter()
            .find(|(s, _)| s.domain == domain)
            .map(|(_, m)| m)
    }

    /// Whether stanzas to `domain` can go anywhere: served, hosted, a connected component, or
    /// a remote domain federation may reach. Modules ask this before work that could only
    /// bounce (presence probes and broadcasts).
    pub fn reachable(&self, domain: &str) -> bool {
        self.serves(domain)
            || self.service(domain).is_some()
            || self.components.get(domain).is_some()
            || self.federation.get().is_some_and(|f| f.reachable(domain))
    }

    /// Every hosted service domain, sorted.
    pub fn services(&self) -> impl Iterator<Item = &HostedService> {
        self.services.iter().map(|(s, _)| s)
    }

    /// Let every module load what it keeps in memory ([`Module::start`]); `franca serve`
    /// calls this once before accepting connections.
    pub async fn start_modules(self: &Arc<Self>) {
        for m in self.modules.iter() {
            m.start(self).await;
        }
    }

    /// Whether `user` has an account here. Online accounts answer from memory, so routing to a
    /// connected user never waits on storage.
    pub async fn account_exists(&self, user: &BareJid) -> bool {
        if user.node().is_none() || !self.serves(user.domain().as_str()) {
            return false;
        }
        if !self.sessions.resources(user).is_empty() {
            return true;
        }
        match self.store.user_exists(user.as_str()).await {
            Ok(exists) => exists,
            Err(e) => {
                tracing::error!(%user, "storage error checking account: {e}");
                false
            }
        }
    }

    /// Bind a resource and tell the modules.
    pub async fn bind(self: &Arc<Self>, jid: FullJid) -> Bound {
        let bound = self.sessions.bind(jid);
        metrics::gauge!("franca_c2s_sessions").increment(1.0);
        if let Some(old) = &bound.replaced {
            self.session_closed(old).await;
            // A hibernated session (XEP-0198) under this full JID will never be resumed now.
            if let Some(state) = self.detached.remove_session(old.id) {
                let Hibernated {
                    session,
                    rx,
                    mut sm,
                    ..
                } = *state;
                let unacked = sm.take_unacked();
                Box::pin(self.end_session(&session, Some(rx), unacked)).await;
            }
        }
        self.emit(&SessionEvent::Bound(bound.session.clone())).await;
        bound
    }

    /// Tell every module about a session event.
    pub async fn emit(self: &Arc<Self>, event: &SessionEvent) {
        for m in self.modules.iter() {
            m.session_event(self, event).await;
        }
    }

    /// A session ended: unbind it and let modules send unavailable presence and clean up.
    /// Safe to call twice for the same session (the second call finds nothing to do).
    pub async fn session_closed(self: &Arc<Self>, session: &Arc<Session>) {
        let was_bound = self
            .sessions
            .get(&session.jid)
            .is_some_and(|s| s.id == session.id);
        self.sessions.unbind(session);
        if !was_bound {
            return;
        }
        metrics::gauge!("franca_c2s_sessions").decrement(1.0);
        self.emit(&SessionEvent::Closed(session.clone())).await;
    }

    /// Delete an account: end its sessions first (told `<not-authorized/>`, so their closing
    /// hooks still see the roster and tell contacts), let modules clean up, then delete its data.
    pub async fn remove_user(self: &Arc<Self>, user: &BareJid) -> franca_store::Result<()> {
        if !self.store.user_exists(user.as_str()).await? {
            return Err(franca_store::StoreError::UnknownUser(user.to_string()));
        }
        self.removed().insert(user.clone(), Instant::now());
        self.kick_user(user, "account removed").await;
        for m in self.modules.iter() {
            m.user_removed(self, user).await;
        }
        self.store.remove_user(user.as_str()).await
    }

    /// End every session of `user` (account removed or disabled by an administrator).
    pub async fn kick_user(self: &Arc<Self>, user: &BareJid, why: &str) {
        // None of its sessions may be resumed. The hibernated ones are among the bound
        // sessions below; what they hold goes with the account, like its offline messages.
        drop(self.detached.remove_account(user));
        for s in self.sessions.resources(user) {
            s.close(
                franca_proto::errors::StreamError::NotAuthorized,
                Some(why.to_owned()),
            );
            self.session_closed(&s).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::Modules;

    #[tokio::test]
    async fn a_removed_account_cannot_bind_a_stream_that_authenticated_before() {
        let store = franca_store::open("sqlite::memory:")
            .await
            .expect("in-memory store");
        let server = Server::new(Config::default(), store.clone(), Modules::new());
        let alice = BareJid::new("alice@localhost").expect("jid");
        let bob = BareJid::new("bob@localhost").expect("jid");
        for user in [&alice, &bob] {
            store.create_user(user.as_str(), &[]).await.expect("create");
        }
        server.remove_user(&alice).await.expect("remove");
        assert!(server.removed_during_login(&alice));
        assert!(!server.removed_during_login(&bob));
        assert!(!server.account_exists(&alice).await);
    }
}
