//! XML for Franca's XMPP streams: an owned element tree, its serialiser, and a sans-IO
//! stream reader.

mod element;
mod error;
mod reader;
mod writer;

pub use element::{Element, Node};
pub use error::XmlError;
pub use reader::{Event, Limits, StreamHeader, StreamReader};
pub use writer::{NS_STREAMS, escape_attr, escape_text, stream_header};
