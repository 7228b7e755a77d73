//! XEP-0045 §7.10 registering with a room (`jabber:iq:register` with the
//! `muc#register` data form) and §7.12 reserved nicknames: the nicknames held for members,
//! who alone may enter under them (§7.2.9), and the `x-roomuser-item` disco node that tells a
//! user theirs (§7.9).
//!
//! Only the room nickname is asked for (`muc#register_roomnick`, as Prosody does); the
//! other fields of the `muc#register` form are optional in the XEP. A form is read within
//! bounds: at most [`MAX_FIELDS`] fields, one value each, and the nickname must pass the same
//! RFC 8266 check as a join. Nicknames are compared by [`nick_key`], so `Juliet` reserves
//! `juliet` too.

use super::occupant::{nick_key, valid_nick};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_DATA_FORMS, NS_DISCO_INFO, NS_REGISTER};
use franca_xml::Element;
use std::collections::HashMap;

/// FORM_TYPE of the registration form.
pub const NS_MUC_REGISTER: &str = "http://jabber.org/protocol/muc#register";
/// The field that carries the nickname.
pub const ROOMNICK: &str = "muc#register_roomnick";
/// The disco node that tells a user its reserved nickname (§7.9).
pub const NODE_ROOMUSER: &str = "x-roomuser-item";

/// Most fields a submitted form may carry (the XEP defines seven).
const MAX_FIELDS: usize = 16;

/// The nicknames reserved in one room, by bare JID, and who holds each (by [`nick_key`]).
#[derive(Debug, Default, Clone)]
pub struct ReservedNicks {
    by_jid: HashMap<String, String>,
    by_key: HashMap<String, String>,
}

impl ReservedNicks {
    /// The nickname reserved for `bare`.
    pub fn of(&self, bare: &str) -> Option<&str> {
        self.by_jid.get(bare).map(String::as_str)
    }

    /// Who holds `nick` (or a nickname that compares equal to it).
    pub fn holder(&self, nick: &str) -> Option<&str> {
        self.by_key.get(&nick_key(nick)).map(String::as_str)
    }

    /// Reserve `nick` for `bare`, in place of what it held. The caller checked that nobody
    /// else holds it.
    pub fn reserve(&mut self, bare: String, nick: String) {
        self.release(&bare);
        self.by_key.insert(nick_key(&nick), bare.clone());
        self.by_jid.insert(bare, nick);
    }

    /// `bare` holds no nickname any more.
    pub fn release(&mut self, bare: &str) {
        if let Some(old) = self.by_jid.remove(bare) {
            self.by_key.remove(&nick_key(&old));
        }
    }
}

/// What a registration IQ asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// The form, or the nickname already registered (`get`).
    Form,
    /// Register with this nickname (a submitted form).
    Register(String),
    /// A cancelled form: nothing changes.
    Cancel,
    /// Unregister (XEP-0077 `<remove/>`).
    Remove,
}

fn bad(text: &str) -> StanzaError {
    StanzaError::new(Cond::BadRequest).with_text(text)
}

/// Read a `jabber:iq:register` `<query/>` sent to the room.
pub fn parse(query: &Element, set: bool, max_nick_chars: usize) -> Result<Request, StanzaError> {
    if !set {
        return Ok(Request::Form);
    }
    if query.has_child("remove", NS_REGISTER) {
        return Ok(Request::Remove);
    }
    let form = query
        .child("x", NS_DATA_FORMS)
        .ok_or_else(|| bad("registration needs the muc#register form"))?;
    match form.attr("type") {
        Some("cancel") => return Ok(Request::Cancel),
        Some("submit") | None => {}
        Some(_) => return Err(bad("the form must be of type submit")),
    }
    let fields: Vec<&Element> = form
        .elements()
        .filter(|e| e.is("field", NS_DATA_FORMS))
        .collect();
    if fields.len() > MAX_FIELDS {
        return Err(bad("too many fields"));
    }
    let mut nick = None;
    for f in fields {
        let values: Vec<String> = f
            .elements()
            .filter(|v| v.is("value", NS_DATA_FORMS))
            .map(Element::text)
            .collect();
        match (f.attr("var").unwrap_or_default(), values.as_slice()) {
            ("FORM_TYPE", [v]) if v.trim() == NS_MUC_REGISTER => {}
            ("FORM_TYPE", _) => return Err(bad("FORM_TYPE must be muc#register")),
            (ROOMNICK, [v]) => nick = Some(v.clone()),
            (ROOMNICK, _) => return Err(bad("one nickname")),
            _ => {}
        }
    }
    // XEP-0077 §3.1: a required field left out, or a value the room cannot take.
    let Some(nick) = nick else {
        return Err(StanzaError::new(Cond::NotAcceptable).with_text("a nickname is required"));
    };
    if !valid_nick(&nick, max_nick_chars) {
        return Err(StanzaError::new(Cond::NotAcceptable).with_text("this nickname is not allowed"));
    }
    Ok(Request::Register(nick))
}

/// The answer to a `get`: the nickname already registered (XEP-0077 `<registered/>`), or
/// the form to fill in.
pub fn form(registered: Option<&str>) -> Element {
    let mut q = Element::new("query", NS_REGISTER);
    if let Some(nick) = registered {
        q.push(Element::new("registered", NS_REGISTER));
        q.push(Element::new("username", NS_REGISTER).with_text(nick));
        return q;
    }
    q.push(
        Element::new("instructions", NS_REGISTER)
            .with_text("Choose the nickname this room keeps for you."),
    );
    let field = |var: &str, kind: &str| {
        Element::new("field", NS_DATA_FORMS)
            .with_attr("var", var)
            .with_attr("type", kind)
    };
    q.push(
        Element::new("x", NS_DATA_FORMS)
            .with_attr("type", "form")
            .with_child(Element::new("title", NS_DATA_FORMS).with_text("Room registration"))
            .with_child(
                field("FORM_TYPE", "hidden")
                    .with_child(Element::new("value", NS_DATA_FORMS).with_text(NS_MUC_REGISTER)),
            )
            .with_child(
                field(ROOMNICK, "text-single")
                    .with_attr("label", "Nickname")
                    .with_child(Element::new("required", NS_DATA_FORMS)),
            ),
    );
    q
}

/// §7.9: the `x-roomuser-item` answer, with the identity naming the reserved nickname when
/// there is one (an empty result otherwise).
pub fn roomuser_item(nick: Option<&str>) -> Element {
    let mut q = Element::new("query", NS_DISCO_INFO).with_attr("node", NODE_ROOMUSER);
    if let Some(nick) = nick {
        q.push(
            Element::new("identity", NS_DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", nick),
        );
    }
    q
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::xml;

    fn submit(fields: &str) -> Element {
        xml(&format!(
            "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE'><value>{NS_MUC_REGISTER}</value></field>{fields}</x></query>"
        ))
    }

    fn condition(r: Result<Request, StanzaError>) -> Cond {
        r.expect_err("an error").condition
    }

    #[test]
    fn xep0045_7_10_a_submitted_form_names_the_nickname() {
        let q = submit(&format!(
            "<field var='{ROOMNICK}'><value>thirdwitch</value></field>\
             <field var='muc#register_first'><value>Brunhilde</value></field>"
        ));
        assert_eq!(
            parse(&q, true, 64).unwrap(),
            Request::Register("thirdwitch".into())
        );
        let get = xml("<query xmlns='jabber:iq:register'/>");
        assert_eq!(parse(&get, false, 64).unwrap(), Request::Form);
        let remove = xml("<query xmlns='jabber:iq:register'><remove/></query>");
        assert_eq!(parse(&remove, true, 64).unwrap(), Request::Remove);
        let cancel = xml(
            "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='cancel'/></query>",
        );
        assert_eq!(parse(&cancel, true, 64).unwrap(), Request::Cancel);
    }

    #[test]
    fn hostile_registration_forms_get_the_proper_error() {
        let long = "n".repeat(65);
        for (fields, want) in [
            (String::new(), Cond::NotAcceptable),
            (
                format!("<field var='{ROOMNICK}'><value>{long}</value></field>"),
                Cond::NotAcceptable,
            ),
            (
                format!("<field var='{ROOMNICK}'><value> spaced</value></field>"),
                Cond::NotAcceptable,
            ),
            (
                format!("<field var='{ROOMNICK}'><value>a</value><value>b</value></field>"),
                Cond::BadRequest,
            ),
            (
                (0..17).map(|i| format!("<field var='f{i}'/>")).collect(),
                Cond::BadRequest,
            ),
        ] {
            assert_eq!(
                condition(parse(&submit(&fields), true, 64)),
                want,
                "{fields}"
            );
        }
        let no_form = xml("<query xmlns='jabber:iq:register'><username>x</username></query>");
        assert_eq!(condition(parse(&no_form, true, 64)), Cond::BadRequest);
        let wrong_type = xml(
            "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE'><value>jabber:iq:register</value></field></x></query>",
        );
        assert_eq!(condition(parse(&wrong_type, true, 64)), Cond::BadRequest);
    }

    #[test]
    fn reserved_nicknames_compare_like_nicknames() {
        let mut r = ReservedNicks::default();
        r.reserve("juliet@localhost".into(), "Juliet".into());
        assert_eq!(r.holder("juliet"), Some("juliet@localhost"));
        assert_eq!(r.of("juliet@localhost"), Some("Juliet"));
        // A new reservation replaces the old one.
        r.reserve("juliet@localhost".into(), "Jules".into());
        assert_eq!(r.holder("Juliet"), None);
        assert_eq!(r.holder("JULES"), Some("juliet@localhost"));
        r.release("juliet@localhost");
        assert_eq!(r.holder("jules"), None);
        assert_eq!(r.of("juliet@localhost"), None);
    }

    #[test]
    fn the_form_or_the_registered_nickname() {
        let f = form(None).to_xml();
        assert!(f.contains(ROOMNICK) && f.contains(NS_MUC_REGISTER), "{f}");
        let done = form(Some("thirdwitch"));
        assert!(done.has_child("registered", NS_REGISTER));
        assert_eq!(
            done.child("username", NS_REGISTER).map(Element::text),
            Some("thirdwitch".into())
        );
        assert!(!roomuser_item(None).has_child("identity", NS_DISCO_INFO));
        assert_eq!(
            roomuser_item(Some("w"))
                .child("identity", NS_DISCO_INFO)
                .and_then(|i| i.attr("name")),
            Some("w")
        );
    }
}
