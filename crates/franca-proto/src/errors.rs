//! Stream errors and stanza errors.
//!
//! * [`StreamError`] lists every defined condition of RFC 6120 §4.9.3 and builds the
//!   `<stream:error/>` element of §4.9.2 (condition in `urn:ietf:params:xml:ns:xmpp-streams`,
//!   optional `<text/>`, §4.9.4 `see-other-host` carrying the new host as character data).
//! * [`StanzaErrorCondition`] lists every defined condition of RFC 6120 §8.3.3 with the error
//!   type the RFC's text and examples give it; `gone` and `redirect` carry the new address as
//!   character data (§8.3.3.5, §8.3.3.14).
//! * [`StanzaError`] is the §8.3.2 `<error/>` element (type, optional `by`, condition, optional
//!   `<text/>`, optional application-specific condition).
//! * [`error_reply`] turns a stanza into its error reply following §8.3.1: same `id`, swapped
//!   `to`/`from`, `type='error'`, original children kept; it never answers a stanza of type
//!   `error` (§8.3.1 rule 2: "MUST NOT respond to an error with a further error") nor an IQ of
//!   type `result` (§8.2.3 rule 4: only `get`/`set` requests get responses).
//!
//! This is the one place where conditions are turned into XML (DESIGN §5, "Error mapping").

use std::fmt;

use franca_xml::Element;

use crate::ns::{NS_STANZAS, NS_STREAM_ERRORS, NS_STREAMS};

/// A stream-level error condition (RFC 6120 §4.9.3). After sending one the stream is closed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamError {
    /// §4.9.3.1 — the entity sent XML that cannot be processed.
    BadFormat,
    /// §4.9.3.2 — unsupported namespace prefix.
    BadNamespacePrefix,
    /// §4.9.3.3 — a new stream for the same identity replaces this one.
    Conflict,
    /// §4.9.3.4 — no traffic for too long.
    ConnectionTimeout,
    /// §4.9.3.5 — the `to` host is no longer serviced.
    HostGone,
    /// §4.9.3.6 — the `to` host is not serviced here.
    HostUnknown,
    /// §4.9.3.7 — a stanza lacked a required `to`/`from` (s2s).
    ImproperAddressing,
    /// §4.9.3.8 — server misconfiguration or another internal failure.
    InternalServerError,
    /// §4.9.3.9 — the `from` address is not authorised for this stream.
    InvalidFrom,
    /// §4.9.3.10 — wrong stream or content namespace.
    InvalidNamespace,
    /// §4.9.3.11 — invalid XML (e.g. schema violation).
    InvalidXml,
    /// §4.9.3.12 — data sent before the stream was authenticated.
    NotAuthorized,
    /// §4.9.3.13 — XML that is not well-formed.
    NotWellFormed,
    /// §4.9.3.14 — a local policy (size, rate, …) was violated.
    PolicyViolation,
    /// §4.9.3.15 — a remote server needed for authentication could not be reached.
    RemoteConnectionFailed,
    /// §4.9.3.16 — the stream must be renegotiated (e.g. keys or credentials changed).
    Reset,
    /// §4.9.3.17 — the server lacks resources for this stream.
    ResourceConstraint,
    /// §4.9.3.18 — restricted XML (comments, PIs, DTDs, entity references) was sent.
    RestrictedXml,
    /// §4.9.3.19 — the client must reconnect to another host; the string is the new
    /// host (domain, `domain:port`, IPv4 or bracketed IPv6, optionally with a port).
    SeeOtherHost(String),
    /// §4.9.3.20 — the server is shutting down.
    SystemShutdown,
    /// §4.9.3.21 — none of the others; should come with an application condition.
    UndefinedCondition,
    /// §4.9.3.22 — an encoding other than UTF-8 was used.
    UnsupportedEncoding,
    /// §4.9.3.23 — a mandatory-to-negotiate feature is not supported by the peer.
    UnsupportedFeature,
    /// §4.9.3.24 — a first-level child that the server does not support.
    UnsupportedStanzaType,
    /// §4.9.3.25 — the `version` attribute names an unsupported version.
    UnsupportedVersion,
}

/// Every RFC 6120 §4.9.3 condition name, in RFC order.
pub const STREAM_ERROR_NAMES: [&str; 25] = [
    "bad-format",
    "bad-namespace-prefix",
    "conflict",
    "connection-timeout",
    "host-gone",
    "host-unknown",
    "improper-addressing",
    "internal-server-error",
    "invalid-from",
    "invalid-namespace",
    "invalid-xml",
    "not-authorized",
    "not-well-formed",
    "policy-violation",
    "remote-connection-failed",
    "reset",
    "resource-constraint",
    "restricted-xml",
    "see-other-host",
    "system-shutdown",
    "undefined-condition",
    "unsupported-encoding",
    "unsupported-feature",
    "unsupported-stanza-type",
    "unsupported-version",
];

impl StreamError {
    /// The condition's element name.
    pub fn name(&self) -> &'static str {
        match self {
            StreamError::BadFormat => "bad-format",
            StreamError::BadNamespacePrefix => "bad-namespace-prefix",
            StreamError::Conflict => "conflict",
            StreamError::ConnectionTimeout => "connection-timeout",
            StreamError::HostGone => "host-gone",
            StreamError::HostUnknown => "host-unknown",
            StreamError::ImproperAddressing => "improper-addressing",
            StreamError::InternalServerError => "internal-server-error",
            StreamError::InvalidFrom => "invalid-from",
            StreamError::InvalidNamespace => "invalid-namespace",
            StreamError::InvalidXml => "invalid-xml",
            StreamError::NotAuthorized => "not-authorized",
            StreamError::NotWellFormed => "not-well-formed",
            StreamError::PolicyViolation => "policy-violation",
            StreamError::RemoteConnectionFailed => "remote-connection-failed",
            StreamError::Reset => "reset",
            StreamError::ResourceConstraint => "resource-constraint",
            StreamError::RestrictedXml => "restricted-xml",
            StreamError::SeeOtherHost(_) => "see-other-host",
            StreamError::SystemShutdown => "system-shutdown",
            StreamError::UndefinedCondition => "undefined-condition",
            StreamError::UnsupportedEncoding => "unsupported-encoding",
            StreamError::UnsupportedFeature => "unsupported-feature",
            StreamError::UnsupportedStanzaType => "unsupported-stanza-type",
            StreamError::UnsupportedVersion => "unsupported-version",
        }
    }

    /// Parses a condition name. `see-other-host` comes back with an empty host; use
    /// [`StreamError::from_element`] to read the host too.
    pub fn from_name(name: &str) -> Option<StreamError> {
        Some(match name {
            "bad-format" => StreamError::BadFormat,
            "bad-namespace-prefix" => StreamError::BadNamespacePrefix,
            "conflict" => StreamError::Conflict,
            "connection-timeout" => StreamError::ConnectionTimeout,
            "host-gone" => StreamError::HostGone,
            "host-unknown" => StreamError::HostUnknown,
            "improper-addressing" => StreamError::ImproperAddressing,
            "internal-server-error" => StreamError::InternalServerError,
            "invalid-from" => StreamError::InvalidFrom,
            "invalid-namespace" => StreamError::InvalidNamespace,
            "invalid-xml" => StreamError::InvalidXml,
            "not-authorized" => StreamError::NotAuthorized,
            "not-well-formed" => StreamError::NotWellFormed,
            "policy-violation" => StreamError::PolicyViolation,
            "remote-connection-failed" => StreamError::RemoteConnectionFailed,
            "reset" => StreamError::Reset,
            "resource-constraint" => StreamError::ResourceConstraint,
            "restricted-xml" => StreamError::RestrictedXml,
            "see-other-host" => StreamError::SeeOtherHost(String::new()),
            "system-shutdown" => StreamError::SystemShutdown,
            "undefined-condition" => StreamError::UndefinedCondition,
            "unsupported-encoding" => StreamError::UnsupportedEncoding,
            "unsupported-feature" => StreamError::UnsupportedFeature,
            "unsupported-stanza-type" => StreamError::UnsupportedStanzaType,
            "unsupported-version" => StreamError::UnsupportedVersion,
            _ => return None,
        })
    }

    /// Maps a reader error to its stream condition (the reader names it, RFC 6120 §4.9.3;
    /// anything unknown becomes `bad-format`).
    pub fn from_xml_error(err: &franca_xml::XmlError) -> StreamError {
        StreamError::from_name(err.stream_condition()).unwrap_or(StreamError::BadFormat)
    }

    /// Builds `<stream:error><condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>
    /// [<text xmlns='…' xml:lang='en'>text</text>]</stream:error>` (RFC 6120 §4.9.2).
    pub fn to_element(&self, text: Option<&str>) -> Element {
        let mut cond = Element::new(self.name(), NS_STREAM_ERRORS);
        if let StreamError::SeeOtherHost(host) = self
            && !host.is_empty()
        {
            cond.push_text(host.clone());
        }
        let mut err = Element::new("error", NS_STREAMS).with_child(cond);
        if let Some(t) = text {
            err.push(
                Element::new("text", NS_STREAM_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(t),
            );
        }
        err
    }

    /// Reads a received `<stream:error/>` element: the condition and the `<text/>`, if any.
    /// Unknown conditions (§4.9.3 is closed) are reported as `undefined-condition`.
    pub fn from_element(el: &Element) -> Option<(StreamError, Option<String>)> {
        if !el.is("error", NS_STREAMS) {
            return None;
        }
        let mut cond = None;
        let mut text = None;
        for child in el.elements() {
            if child.ns != NS_STREAM_ERRORS {
                continue;
            }
            if child.name == "text" {
                text = Some(child.text());
            } else if cond.is_none() {
                cond = Some(match StreamError::from_name(&child.name) {
                    Some(StreamError::SeeOtherHost(_)) => {
                        StreamError::SeeOtherHost(child.text().trim().to_owned())
                    }
                    Some(c) => c,
                    None => StreamError::UndefinedCondition,
                });
            }
        }
        Some((cond.unwrap_or(StreamError::UndefinedCondition), text))
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::SeeOtherHost(h) => write!(f, "see-other-host ({h})"),
            other => f.write_str(other.name()),
        }
    }
}

/// The `type` attribute of a stanza `<error/>` (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry (the error cannot be remedied).
    Cancel,
    /// Proceed (the condition was only a warning).
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting (the error is temporary).
    Wait,
}

impl ErrorType {
    /// The attribute value.
    pub fn name(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }

    /// Parses the attribute value.
    pub fn from_name(name: &str) -> Option<ErrorType> {
        Some(match name {
            "auth" => ErrorType::Auth,
            "cancel" => ErrorType::Cancel,
            "continue" => ErrorType::Continue,
            "modify" => ErrorType::Modify,
            "wait" => ErrorType::Wait,
            _ => return None,
        })
    }
}

/// A defined stanza error condition (RFC 6120 §8.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StanzaErrorCondition {
    /// §8.3.3.1 (modify).
    BadRequest,
    /// §8.3.3.2 (cancel).
    Conflict,
    /// §8.3.3.3 (cancel).
    FeatureNotImplemented,
    /// §8.3.3.4 (auth).
    Forbidden,
    /// §8.3.3.5 (cancel); may carry the entity's new address (an XMPP URI).
    Gone(Option<String>),
    /// §8.3.3.6 (cancel).
    InternalServerError,
    /// §8.3.3.7 (cancel).
    ItemNotFound,
    /// §8.3.3.8 (modify).
    JidMalformed,
    /// §8.3.3.9 (modify).
    NotAcceptable,
    /// §8.3.3.10 (cancel).
    NotAllowed,
    /// §8.3.3.11 (auth).
    NotAuthorized,
    /// §8.3.3.12 (modify).
    PolicyViolation,
    /// §8.3.3.13 (wait).
    RecipientUnavailable,
    /// §8.3.3.14 (modify); may carry the alternative address (an XMPP URI).
    Redirect(Option<String>),
    /// §8.3.3.15 (auth).
    RegistrationRequired,
    /// §8.3.3.16 (cancel).
    RemoteServerNotFound,
    /// §8.3.3.17 (wait).
    RemoteServerTimeout,
    /// §8.3.3.18 (wait).
    ResourceConstraint,
    /// §8.3.3.19 (cancel).
    ServiceUnavailable,
    /// §8.3.3.20 (auth).
    SubscriptionRequired,
    /// §8.3.3.21 (any type; we default to cancel); should come with an application condition.
    UndefinedCondition,
    /// §8.3.3.22 (wait; the RFC allows "wait" or "modify").
    UnexpectedRequest,
}

/// Every RFC 6120 §8.3.3 condition name, in RFC order.
pub const STANZA_ERROR_NAMES: [&str; 22] = [
    "bad-request",
    "conflict",
    "feature-not-implemented",
    "forbidden",
    "gone",
    "internal-server-error",
    "item-not-found",
    "jid-malformed",
    "not-acceptable",
    "not-allowed",
    "not-authorized",
    "policy-violation",
    "recipient-unavailable",
    "redirect",
    "registration-required",
    "remote-server-not-found",
    "remote-server-timeout",
    "resource-constraint",
    "service-unavailable",
    "subscription-required",
    "undefined-condition",
    "unexpected-request",
];

impl StanzaErrorCondition {
    /// The condition's element name.
    pub fn name(&self) -> &'static str {
        use StanzaErrorCondition as C;
        match self {
            C::BadRequest => "bad-request",
            C::Conflict => "conflict",
            C::FeatureNotImplemented => "feature-not-implemented",
            C::Forbidden => "forbidden",
            C::Gone(_) => "gone",
            C::InternalServerError => "internal-server-error",
            C::ItemNotFound => "item-not-found",
            C::JidMalformed => "jid-malformed",
            C::NotAcceptable => "not-acceptable",
            C::NotAllowed => "not-allowed",
            C::NotAuthorized => "not-authorized",
            C::PolicyViolation => "policy-violation",
            C::RecipientUnavailable => "recipient-unavailable",
            C::Redirect(_) => "redirect",
            C::RegistrationRequired => "registration-required",
            C::RemoteServerNotFound => "remote-server-not-found",
            C::RemoteServerTimeout => "remote-server-timeout",
            C::ResourceConstraint => "resource-constraint",
            C::ServiceUnavailable => "service-unavailable",
            C::SubscriptionRequired => "subscription-required",
            C::UndefinedCondition => "undefined-condition",
            C::UnexpectedRequest => "unexpected-request",
        }
    }

    /// Parses a condition name (`gone`/`redirect` come back without an address).
    pub fn from_name(name: &str) -> Option<StanzaErrorCondition> {
        use StanzaErrorCondition as C;
        Some(match name {
            "bad-request" => C::BadRequest,
            "conflict" => C::Conflict,
            "feature-not-implemented" => C::FeatureNotImplemented,
            "forbidden" => C::Forbidden,
            "gone" => C::Gone(None),
            "internal-server-error" => C::InternalServerError,
            "item-not-found" => C::ItemNotFound,
            "jid-malformed" => C::JidMalformed,
            "not-acceptable" => C::NotAcceptable,
            "not-allowed" => C::NotAllowed,
            "not-authorized" => C::NotAuthorized,
            "policy-violation" => C::PolicyViolation,
            "recipient-unavailable" => C::RecipientUnavailable,
            "redirect" => C::Redirect(None),
            "registration-required" => C::RegistrationRequired,
            "remote-server-not-found" => C::RemoteServerNotFound,
            "remote-server-timeout" => C::RemoteServerTimeout,
            "resource-constraint" => C::ResourceConstraint,
            "service-unavailable" => C::ServiceUnavailable,
            "subscription-required" => C::SubscriptionRequired,
            "undefined-condition" => C::UndefinedCondition,
            "unexpected-request" => C::UnexpectedRequest,
            _ => return None,
        })
    }

    /// The error type RFC 6120 §8.3.3 associates with the condition (its text and examples).
    pub fn default_type(&self) -> ErrorType {
        use StanzaErrorCondition as C;
        match self {
            C::BadRequest
            | C::JidMalformed
            | C::NotAcceptable
            | C::PolicyViolation
            | C::Redirect(_) => ErrorType::Modify,
            C::Conflict
            | C::FeatureNotImplemented
            | C::Gone(_)
            | C::InternalServerError
            | C::ItemNotFound
            | C::NotAllowed
            | C::RemoteServerNotFound
            | C::ServiceUnavailable
            | C::UndefinedCondition => ErrorType::Cancel,
            C::Forbidden | C::NotAuthorized | C::RegistrationRequired | C::SubscriptionRequired => {
                ErrorType::Auth
            }
            C::RecipientUnavailable
            | C::RemoteServerTimeout
            | C::ResourceConstraint
            | C::UnexpectedRequest => ErrorType::Wait,
        }
    }

    fn address(&self) -> Option<&str> {
        match self {
            StanzaErrorCondition::Gone(a) | StanzaErrorCondition::Redirect(a) => a.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for StanzaErrorCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address() {
            Some(a) => write!(f, "{} ({a})", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// A stanza `<error/>` element (RFC 6120 §8.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// The defined condition.
    pub condition: StanzaErrorCondition,
    /// The `type` attribute.
    pub type_: ErrorType,
    /// Optional human-readable `<text xml:lang='en'/>`.
    pub text: Option<String>,
    /// Optional application-specific condition element (e.g. XEP-0191 `<blocked/>`). Boxed so
    /// `Result<_, StanzaError>` stays small on the routing path.
    pub app: Option<Box<Element>>,
    /// Optional `by` attribute: the entity that generated the error (§8.3.2).
    pub by: Option<String>,
}

impl StanzaError {
    /// An error with the condition's default type and nothing else.
    pub fn new(condition: StanzaErrorCondition) -> StanzaError {
        let type_ = condition.default_type();
        StanzaError {
            condition,
            type_,
            text: None,
            app: None,
            by: None,
        }
    }

    /// Overrides the error type.
    pub fn with_type(mut self, type_: ErrorType) -> StanzaError {
        self.type_ = type_;
        self
    }

    /// Adds a human-readable text.
    pub fn with_text(mut self, text: impl Into<String>) -> StanzaError {
        self.text = Some(text.into());
        self
    }

    /// Adds an application-specific condition element.
    pub fn with_app(mut self, app: Element) -> StanzaError {
        self.app = Some(Box::new(app));
        self
    }

    /// Sets the `by` attribute.
    pub fn with_by(mut self, by: impl Into<String>) -> StanzaError {
        self.by = Some(by.into());
        self
    }

    /// Builds the `<error/>` element in the stanza's namespace (`jabber:client`,
    /// `jabber:server`, …): condition and `<text/>` in `urn:ietf:params:xml:ns:xmpp-stanzas`,
    /// then the application condition (§8.3.2).
    pub fn to_element(&self, stanza_ns: &str) -> Element {
        let mut err = Element::new("error", stanza_ns).with_attr("type", self.type_.name());
        if let Some(by) = &self.by {
            err.set_attr("by", by.clone());
        }
        let mut cond = Element::new(self.condition.name(), NS_STANZAS);
        if let Some(addr) = self.condition.address() {
            cond.push_text(addr);
        }
        err.push(cond);
        if let Some(t) = &self.text {
            err.push(
                Element::new("text", NS_STANZAS)
                    .with_attr("xml:lang", "en")
                    .with_text(t.clone()),
            );
        }
        if let Some(app) = &self.app {
            err.push(app.as_ref().clone());
        }
        err
    }

    /// Reads the `<error/>` child of a stanza of type `error` (or an `<error/>` element itself,
    /// in any namespace). Unknown or missing conditions read as `undefined-condition`; a missing
    /// or unknown `type` falls back to the condition's default.
    pub fn from_element(el: &Element) -> Option<StanzaError> {
        let err = if el.name == "error" {
            el
        } else {
            el.elements().find(|c| c.name == "error" && c.ns == el.ns)?
        };
        let mut condition = None;
        let mut text = None;
        let mut app = None;
        for child in err.elements() {
            if child.ns == NS_STANZAS {
                if child.name == "text" {
                    text = Some(child.text());
                } else if condition.is_none() {
                    let c = match StanzaErrorCondition::from_name(&child.name) {
                        Some(StanzaErrorCondition::Gone(_)) => {
                            StanzaErrorCondition::Gone(non_empty(child.text()))
                        }
                        Some(StanzaErrorCondition::Redirect(_)) => {
                            StanzaErrorCondition::Redirect(non_empty(child.text()))
                        }
                        Some(c) => c,
                        None => StanzaErrorCondition::UndefinedCondition,
                    };
                    condition = Some(c);
                }
            } else if app.is_none() {
                app = Some(Box::new(child.clone()));
            }
        }
        let condition = condition.unwrap_or(StanzaErrorCondition::UndefinedCondition);
        let type_ = err
            .attr("type")
            .and_then(ErrorType::from_name)
            .unwrap_or_else(|| condition.default_type());
        Some(StanzaError {
            condition,
            type_,
            text,
            app,
            by: err.attr("by").map(str::to_owned),
        })
    }
}

impl From<StanzaErrorCondition> for StanzaError {
    fn from(c: StanzaErrorCondition) -> StanzaError {
        StanzaError::new(c)
    }
}

impl fmt::Display for StanzaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.condition, self.type_.name())?;
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StanzaError {}

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else {
        Some(t.to_owned())
    }
}

/// Builds the error reply to `stanza` (RFC 6120 §8.3.1): a copy of the stanza with `to` and
/// `from` swapped, `type='error'`, the same `id` and other attributes, the original children and
/// the `<error/>` element appended.
///
/// Returns `None` when the stanza must not be answered: it is itself of type `error` (never
/// bounce errors), or it is an IQ of type `result`.
///
/// A missing `from` (a c2s client usually omits it) gives a reply without `to`, and a missing
/// `to` (addressed to the account or server) gives a reply without `from`; the caller stamps
/// those from the session.
pub fn error_reply(stanza: &Element, err: &StanzaError) -> Option<Element> {
    match stanza.attr("type") {
        Some("error") => return None,
        Some("result") if stanza.name == "iq" => return None,
        _ => {}
    }
    let mut reply = stanza.clone();
    let to = reply.remove_attr("to");
    let from = reply.remove_attr("from");
    if let Some(from) = from {
        reply.set_attr("to", from);
    }
    if let Some(to) = to {
        reply.set_attr("from", to);
    }
    reply.set_attr("type", "error");
    let ns = reply.ns.clone();
    reply.push(err.to_element(&ns));
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns::NS_CLIENT;

    #[test]
    fn rfc6120_4_9_3_every_stream_condition_round_trips() {
        for name in STREAM_ERROR_NAMES {
            let e = StreamError::from_name(name).expect("known");
            assert_eq!(e.name(), name);
        }
        assert_eq!(StreamError::from_name("bogus"), None);
    }

    #[test]
    fn rfc6120_4_9_2_stream_error_element() {
        let el = StreamError::PolicyViolation.to_element(Some("too big"));
        assert!(el.is("error", NS_STREAMS));
        assert!(el.has_child("policy-violation", NS_STREAM_ERRORS));
        let text = el.child("text", NS_STREAM_ERRORS).expect("text");
        assert_eq!(text.text(), "too big");
        assert_eq!(text.attr("xml:lang"), Some("en"));
        assert_eq!(
            StreamError::from_element(&el),
            Some((StreamError::PolicyViolation, Some("too big".into())))
        );
        let bare = StreamError::Conflict.to_element(None);
        assert_eq!(bare.elements().count(), 1);
    }

    #[test]
    fn rfc6120_4_9_3_19_see_other_host_carries_host() {
        let el = StreamError::SeeOtherHost("[2001:db8::ea]:5222".into()).to_element(None);
        let c = el.child("see-other-host", NS_STREAM_ERRORS).expect("cond");
        assert_eq!(c.text(), "[2001:db8::ea]:5222");
        assert_eq!(
            StreamError::from_element(&el).map(|x| x.0),
            Some(StreamError::SeeOtherHost("[2001:db8::ea]:5222".into()))
        );
    }

    #[test]
    fn rfc6120_8_3_3_every_stanza_condition_round_trips() {
        for name in STANZA_ERROR_NAMES {
            let c = StanzaErrorCondition::from_name(name).expect("known");
            assert_eq!(c.name(), name);
        }
        use StanzaErrorCondition as C;
        assert_eq!(C::BadRequest.default_type(), ErrorType::Modify);
        assert_eq!(C::Forbidden.default_type(), ErrorType::Auth);
        assert_eq!(C::ServiceUnavailable.default_type(), ErrorType::Cancel);
        assert_eq!(C::RecipientUnavailable.default_type(), ErrorType::Wait);
        assert_eq!(C::Redirect(None).default_type(), ErrorType::Modify);
        assert_eq!(C::Gone(None).default_type(), ErrorType::Cancel);
        assert_eq!(C::from_name("nope"), None);
        for t in ["auth", "cancel", "continue", "modify", "wait"] {
            assert_eq!(ErrorType::from_name(t).map(ErrorType::name), Some(t));
        }
    }

    #[test]
    fn rfc6120_8_3_1_error_reply_swaps_and_keeps_payload() {
        let iq = Element::new("iq", NS_CLIENT)
            .with_attr("from", "juliet@im.example.com/balcony")
            .with_attr("to", "romeo@example.net")
            .with_attr("type", "get")
            .with_attr("id", "ix61z")
            .with_child(Element::new("query", "jabber:iq:roster"));
        let err = StanzaError::new(StanzaErrorCondition::ServiceUnavailable).with_text("no");
        let r = error_reply(&iq, &err).expect("reply");
        assert_eq!(r.name, "iq");
        assert_eq!(r.attr("to"), Some("juliet@im.example.com/balcony"));
        assert_eq!(r.attr("from"), Some("romeo@example.net"));
        assert_eq!(r.attr("type"), Some("error"));
        assert_eq!(r.attr("id"), Some("ix61z"));
        assert!(r.has_child("query", "jabber:iq:roster"));
        let e = r.child("error", NS_CLIENT).expect("error");
        assert_eq!(e.attr("type"), Some("cancel"));
        assert!(e.has_child("service-unavailable", NS_STANZAS));
        assert_eq!(StanzaError::from_element(&r), Some(err));
    }

    #[test]
    fn rfc6120_8_3_1_never_bounce_errors_or_results() {
        let err = StanzaError::new(StanzaErrorCondition::ItemNotFound);
        let m = Element::new("message", NS_CLIENT).with_attr("type", "error");
        assert!(error_reply(&m, &err).is_none());
        let r = Element::new("iq", NS_CLIENT).with_attr("type", "result");
        assert!(error_reply(&r, &err).is_none());
        // No from/to: nothing invented.
        let p = Element::new("presence", NS_CLIENT);
        let rep = error_reply(&p, &err).expect("reply");
        assert_eq!(rep.attr("to"), None);
        assert_eq!(rep.attr("from"), None);
    }

    #[test]
    fn rfc6120_8_3_3_5_gone_and_redirect_carry_address() {
        let err = StanzaError::new(StanzaErrorCondition::Gone(Some(
            "xmpp:romeo@afterlife.example.net".into(),
        )))
        .with_by("example.net");
        let el = err.to_element(NS_CLIENT);
        assert_eq!(el.attr("by"), Some("example.net"));
        assert_eq!(
            el.child("gone", NS_STANZAS).map(|c| c.text()),
            Some("xmpp:romeo@afterlife.example.net".to_string())
        );
        assert_eq!(StanzaError::from_element(&el), Some(err));
        let r = StanzaError::new(StanzaErrorCondition::Redirect(Some("xmpp:a@b".into())));
        assert_eq!(StanzaError::from_element(&r.to_element(NS_CLIENT)), Some(r));
    }

    #[test]
    fn app_specific_condition_is_kept() {
        let err = StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_app(Element::new("blocked", crate::ns::NS_BLOCKING_ERRORS));
        let el = err.to_element(NS_CLIENT);
        assert!(el.has_child("blocked", crate::ns::NS_BLOCKING_ERRORS));
        assert_eq!(StanzaError::from_element(&el), Some(err));
    }
}
