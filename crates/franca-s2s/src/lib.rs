//! Federation (RFC 6120 server-to-server): finding a remote domain's servers (DNS SRV,
//! XEP-0368), TLS with certificates checked against the domain (SASL EXTERNAL) or XEP-0220
//! dialback when they cannot be, one outbound connection per domain pair with a queue while it
//! is set up, the inbound listener that checks `from` and `to` on every stanza, and the
//! federation policy. franca-core sees all of it as one `external::Federation`.

pub mod dns;
pub mod federation;
pub mod inbound;
pub mod outbound;
pub mod policy;
pub mod pool;
pub mod stream;
pub mod verify;

pub use federation::S2s;
