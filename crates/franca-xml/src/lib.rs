//! XML for Franca's XMPP streams: an owned element tree ([`Element`]), its serialiser,
//! and a sans-IO stream reader ([`StreamReader`]) that turns bytes from a peer into
//! stream headers and stanzas.
//!
//! The reader wraps [rxml](https://docs.rs/rxml)'s push parser, which already refuses
//! what RFC 6120 §11 forbids (DTDs, custom entities, processing instructions, comments,
//! non-UTF-8). rxml has no notion of a stanza, though, so on its own it would let an
//! unauthenticated peer grow memory without bound. The wrapper adds the limits it lacks:
//! bytes per stanza (counted from the first byte of the start tag, so an endless tag or
//! text is cut off), nesting depth and attributes per element. It also stops exactly at
//! each stanza's end, so the caller can drop plaintext after `<starttls/>` or restart the
//! stream after SASL without losing pipelined bytes, and it releases rxml's buffers when
//! idle so that a quiet connection costs little memory.

mod document;
mod element;
mod error;
mod reader;
#[cfg(test)]
mod roundtrip;
mod writer;

pub use document::read_document;
pub use element::{Element, Node};
pub use error::XmlError;
pub use reader::{Event, Limits, StreamHeader, StreamReader};
pub use writer::{NS_STREAMS, escape_attr, escape_text, stream_header};
