//! Turns rxml raw events into stream headers and stanza trees, enforcing the
//! structural limits (depth, attribute count) as early as the events allow.

use rxml::{NcName, RawEvent};

use super::scope::Scopes;
use super::{Event, Limits, StreamHeader};
use crate::element::Element;
use crate::error::XmlError;
use crate::writer::{NS_STREAMS, NS_XML};

/// What the feed loop should do after one raw event.
#[derive(Debug)]
pub(super) enum Step {
    /// The event was absorbed into a partial construct.
    Continue,
    /// A depth-0 construct ended without producing an event (whitespace between stanzas);
    /// the next stanza's byte count starts here.
    Boundary,
    /// A complete event; also a byte-count boundary.
    Emit(Event),
}

/// A start tag whose attributes are still arriving.
#[derive(Debug)]
struct StartTag {
    prefix: Option<NcName>,
    name: NcName,
    default_ns: Option<String>,
    decls: Vec<(String, String)>,
    attrs: Vec<(Option<NcName>, NcName, String)>,
    /// Attributes seen so far, namespace declarations included (they cost memory too).
    count: usize,
}

#[derive(Debug, Default)]
pub(super) struct Builder {
    scopes: Scopes,
    pending: Option<StartTag>,
    /// Open elements of the current stanza; `stack[0]` is the stanza element.
    stack: Vec<Element>,
    stream_open: bool,
}

impl Builder {
    /// True when no start tag or stanza is half-built.
    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_none() && self.stack.is_empty()
    }

    /// Drops spare capacity left behind by a deep stanza.
    pub(super) fn shrink(&mut self) {
        if self.stack.is_empty() {
            self.stack = Vec::new();
        }
    }

    pub(super) fn process(&mut self, ev: RawEvent, limits: &Limits) -> Result<Step, XmlError> {
        match ev {
            RawEvent::XmlDeclaration(..) => Ok(Step::Continue),
            RawEvent::ElementHeadOpen(_, (prefix, name)) => {
                // The stream element is not counted: the stanza element is depth 1.
                if self.stream_open && self.stack.len() >= limits.max_depth {
                    return Err(XmlError::PolicyViolation(format!(
                        "element nesting deeper than {}",
                        limits.max_depth
                    )));
                }
                self.pending = Some(StartTag {
                    prefix,
                    name,
                    default_ns: None,
                    decls: Vec::new(),
                    attrs: Vec::new(),
                    count: 0,
                });
                Ok(Step::Continue)
            }
            RawEvent::Attribute(_, (prefix, name), value) => {
                let tag = self
                    .pending
                    .as_mut()
                    .ok_or_else(|| out_of_order("attribute"))?;
                tag.count += 1;
                if tag.count > limits.max_attrs {
                    return Err(XmlError::PolicyViolation(format!(
                        "more than {} attributes on one element",
                        limits.max_attrs
                    )));
                }
                tag.add(prefix, name, value)?;
                Ok(Step::Continue)
            }
            RawEvent::ElementHeadClose(_) => {
                let tag = self
                    .pending
                    .take()
                    .ok_or_else(|| out_of_order("end of start tag"))?;
                self.open(tag)
            }
            RawEvent::ElementFoot(_) => self.close(),
            RawEvent::Text(_, text) => match self.stack.last_mut() {
                Some(top) => {
                    top.push_text(text);
                    Ok(Step::Continue)
                }
                // rxml only lets whitespace through outside the root, so this is inside the
                // stream but between stanzas.
                None if text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) => {
                    Ok(Step::Boundary)
                }
                None => Err(XmlError::BadFormat("text between stanzas".into())),
            },
        }
    }

    fn open(&mut self, tag: StartTag) -> Result<Step, XmlError> {
        let StartTag {
            prefix,
            name,
            default_ns,
            decls,
            attrs,
            ..
        } = tag;
        self.scopes.push(default_ns.clone(), decls);
        let ns = self
            .scopes
            .resolve(prefix.as_deref().map(|p| p.as_str()))?
            .to_owned();
        let attrs = self.resolve_attrs(attrs)?;
        let name = String::from(name);
        if self.stream_open {
            self.stack.push(Element {
                name,
                ns,
                attrs,
                children: Vec::new(),
            });
            return Ok(Step::Continue);
        }
        if name != "stream" || ns != NS_STREAMS {
            return Err(XmlError::InvalidNamespace(format!(
                "stream root must be <stream xmlns='{NS_STREAMS}'>, got <{name}> in {ns:?}"
            )));
        }
        self.stream_open = true;
        let mut attrs = attrs;
        // The content namespace (jabber:client, …) is only visible as a declaration; expose
        // it as the pseudo-attribute "xmlns" so the stream layer can check it.
        if let Some(default_ns) = default_ns {
            attrs.push(("xmlns".into(), default_ns));
        }
        Ok(Step::Emit(Event::StreamStart(StreamHeader {
            name,
            ns,
            attrs,
        })))
    }

    /// Turns prefixed attribute names into our key convention and rejects duplicates,
    /// which rxml's raw parser leaves to us.
    fn resolve_attrs(
        &self,
        raw: Vec<(Option<NcName>, NcName, String)>,
    ) -> Result<Vec<(String, String)>, XmlError> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(raw.len());
        for (prefix, name, value) in raw {
            let key = match prefix.as_deref().map(|p| p.as_str()) {
                None => String::from(name),
                Some(p) => match self.scopes.resolve(Some(p))? {
                    NS_XML => format!("xml:{}", name.as_str()),
                    uri => format!("{{{uri}}}{}", name.as_str()),
                },
            };
            // Quadratic, but the attribute count is capped by `Limits::max_attrs`.
            if out.iter().any(|(k, _)| *k == key) {
                return Err(XmlError::NotWellFormed(format!(
                    "duplicate attribute {key:?}"
                )));
            }
            out.push((key, value));
        }
        Ok(out)
    }

    fn close(&mut self) -> Result<Step, XmlError> {
        self.scopes.pop();
        let Some(el) = self.stack.pop() else {
            // Only the stream root can close with an empty stanza stack.
            self.stream_open = false;
            return Ok(Step::Emit(Event::StreamEnd));
        };
        match self.stack.last_mut() {
            Some(parent) => {
                parent.push(el);
                Ok(Step::Continue)
            }
            None => Ok(Step::Emit(Event::Stanza(el))),
        }
    }
}

impl StartTag {
    fn add(&mut self, prefix: Option<NcName>, name: NcName, value: String) -> Result<(), XmlError> {
        match prefix.as_deref().map(|p| p.as_str()) {
            Some("xmlns") => {
                if self.decls.iter().any(|(p, _)| p == name.as_str()) {
                    return Err(duplicate(&format!("xmlns:{}", name.as_str())));
                }
                self.decls.push((name.into(), value));
            }
            None if name.as_str() == "xmlns" => {
                if self.default_ns.is_some() {
                    return Err(duplicate("xmlns"));
                }
                self.default_ns = Some(value);
            }
            _ => self.attrs.push((prefix, name, value)),
        }
        Ok(())
    }
}

fn duplicate(key: &str) -> XmlError {
    XmlError::NotWellFormed(format!("duplicate attribute {key:?}"))
}

/// rxml guarantees the raw event order; this only guards against a broken invariant
/// without panicking.
fn out_of_order(what: &str) -> XmlError {
    XmlError::NotWellFormed(format!("unexpected {what} from the parser"))
}
