//! The heart of Franca: the shared server context ([`Server`]), the session registry, the
//! router that applies the RFC 6121 delivery rules, the module API that features plug into, and
//! the configuration types. It knows nothing of sockets or TLS (`franca-net`) nor of SQL
//! (`franca-store`): transports hand it stanzas, and it hands stanzas to session queues.

pub mod config;
pub mod credentials;
pub mod detached;
pub mod external;
pub mod fanout;
pub mod module;
pub mod outbox;
pub mod router;
pub mod server;
pub mod session;
pub mod upload;
pub mod util;

pub use config::Config;
pub use module::{
    Flow, HostedService, IqRequest, IqResult, IqTarget, Module, Modules, SessionEvent,
};
pub use server::Server;
pub use session::{Outbound, Session, Sessions};
