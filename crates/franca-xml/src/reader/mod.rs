//! Sans-IO XMPP stream reader on rxml's push parser, with limits.
//!
//! rxml gives us a restricted, namespace-aware tokenizer (no DTD, no entities beyond the
//! predefined ones, no PIs, no comments). On top of it this module enforces what rxml does
//! not: a per-stanza byte budget, a nesting depth and an attribute count, and it knows
//! where one stanza ends so that pipelined bytes stay with the caller.

mod builder;
mod scope;
#[cfg(test)]
mod tests;

use rxml::error::EndOrError;
use rxml::{Options, Parse, RawParser, WithOptions};

use self::builder::{Builder, Step};
use crate::element::Element;
use crate::error::XmlError;

/// Bounds on what one peer may make the reader hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes from the first byte of a stanza's start tag to the end of its end tag
    /// (also applies to the stream header).
    pub max_stanza_bytes: usize,
    /// Element nesting; the stanza element is depth 1, the stream element is not counted.
    pub max_depth: usize,
    /// Attributes on any one element, namespace declarations included.
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 64,
            max_attrs: 64,
        }
    }
}

/// Longest name or attribute value rxml will accept, capped by the stanza limit.
///
/// Text is not bounded by this: rxml splits long text into chunks of at most this size,
/// which the builder merges, so a 256 KiB body still fits. The cap matters for memory
/// because rxml reserves a scratch buffer of exactly this size as soon as it lexes
/// a token; 16 KiB keeps that small while allowing any realistic attribute (a
/// maximal JID is 3071 bytes).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The peer's `<stream:stream>` start tag.
///
/// `attrs` follows the [`Element`] key convention, plus the pseudo-attribute `"xmlns"`
/// carrying the default namespace the header declared (the content namespace,
/// e.g. `jabber:client`), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
}

impl StreamHeader {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// One complete unit of an XMPP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    StreamStart(StreamHeader),
    /// A top-level child of the stream (stanza or nonza), with resolved namespaces.
    Stanza(Element),
    /// `</stream:stream>`.
    StreamEnd,
}

/// Incremental reader for one direction of an XMPP stream.
pub struct StreamReader {
    limits: Limits,
    parser: RawParser,
    builder: Builder,
    /// Bytes taken from the input since the last depth-0 boundary (stream header end,
    /// stanza end, whitespace between stanzas). This covers partial tags and text that
    /// rxml is still buffering, which event metrics alone would not.
    consumed: usize,
    /// Sum of the metrics of the events seen since that boundary; `consumed - attributed`
    /// is what already belongs to the next construct (e.g. the `<` after whitespace).
    attributed: usize,
    /// Errors are final: rxml poisons itself, and our own state is no longer consistent.
    failed: Option<XmlError>,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("limits", &self.limits)
            .field("consumed", &self.consumed)
            .field("idle", &self.is_idle())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    pub fn new(limits: Limits) -> StreamReader {
        StreamReader {
            limits,
            parser: new_parser(&limits),
            builder: Builder::default(),
            consumed: 0,
            attributed: 0,
            failed: None,
        }
    }

    /// Consume bytes from the front of `input` until one Event is complete, and return it.
    /// Returns Ok(None) when `input` is exhausted without a complete event (the partial state is kept
    /// inside the reader; the caller feeds more later). Bytes after the returned event stay in `input`,
    /// so the caller can discard them (STARTTLS) or feed them after a reset (SASL restart).
    ///
    /// After an error the reader stays failed and returns the same error again.
    pub fn feed(&mut self, input: &mut &[u8]) -> Result<Option<Event>, XmlError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.step(input) {
            Ok(ev) => Ok(ev),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<Option<Event>, XmlError> {
        loop {
            self.skip_keepalives(input);
            let before = input.len();
            let result = self.parser.parse(input, false);
            let taken = before.saturating_sub(input.len());
            self.consumed = self.consumed.saturating_add(taken);
            if self.consumed > self.limits.max_stanza_bytes {
                return Err(XmlError::PolicyViolation(format!(
                    "stanza larger than {} bytes",
                    self.limits.max_stanza_bytes
                )));
            }
            let ev = match result {
                Ok(Some(ev)) => ev,
                // `Ok(None)` means end of document, which only happens with `at_eof`; we
                // never claim EOF, so treat it like a lack of data.
                Ok(None) | Err(EndOrError::NeedMoreData) => {
                    if !input.is_empty() && taken > 0 {
                        continue;
                    }
                    if !input.is_empty() {
                        // Cannot happen with rxml 0.14; refuse rather than spin or drop bytes.
                        return Err(XmlError::NotWellFormed("parser made no progress".into()));
                    }
                    if self.is_idle() {
                        self.release_buffers();
                    }
                    return Ok(None);
                }
                Err(EndOrError::Error(e)) => return Err(XmlError::from_rxml(e)),
            };
            self.attributed = self.attributed.saturating_add(ev.metrics().len());
            match self.builder.process(ev, &self.limits)? {
                Step::Continue => {}
                Step::Boundary => self.boundary(),
                Step::Emit(ev) => {
                    self.boundary();
                    return Ok(Some(ev));
                }
            }
        }
    }

    /// Drops whitespace between stanzas before rxml sees it.
    ///
    /// rxml would buffer it as text (allocating its scratch buffer) and report it only
    /// when the next `<` arrives, so a keepalive would leave the reader looking busy.
    /// This is only safe when idle, where rxml sits between elements (or before the
    /// document) with nothing buffered. Before the header it also tolerates a peer that
    /// sends a keepalive just before a stream restart.
    fn skip_keepalives(&mut self, input: &mut &[u8]) {
        if self.is_idle() {
            let n = input
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            *input = &input[n..];
        }
    }

    fn boundary(&mut self) {
        self.consumed = self.consumed.saturating_sub(self.attributed);
        self.attributed = 0;
    }

    /// Frees rxml's token scratch buffers (16 KiB once a token was lexed) when no stanza is
    /// in progress. Called automatically when a feed runs out of input while idle; callers
    /// that stop feeding right after a stanza ended exactly at the end of their input (the
    /// usual case) call it themselves, so an idle connection holds only a few hundred bytes.
    pub fn release_if_idle(&mut self) {
        if self.failed.is_none() && self.is_idle() {
            self.release_buffers();
        }
    }

    fn release_buffers(&mut self) {
        self.parser.release_temporaries();
        self.builder.shrink();
    }

    /// Stream restart: forget all parser state (the next bytes must start a new stream header).
    pub fn reset(&mut self) {
        *self = StreamReader::new(self.limits);
    }

    /// True when the reader holds no partial stanza (used to release buffers on idle).
    pub fn is_idle(&self) -> bool {
        self.consumed == 0 && self.builder.is_idle()
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

fn new_parser(limits: &Limits) -> RawParser {
    <RawParser as WithOptions>::with_options(Options {
        // rxml needs room for at least a short name; tiny stanza limits are still
        // enforced by our own byte count.
        max_token_length: limits.max_stanza_bytes.clamp(64, MAX_TOKEN_BYTES),
        ..Options::default()
    })
}
