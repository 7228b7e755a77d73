//! Room configuration (XEP-0045 §10.2): the `muc#roomconfig` data form an owner reads and
//! submits, the `muc_*` disco features it implies (§6.4), and the stored form of it.
//!
//! The stored form is the same submitted data form, plus the occupant-id secret as a hidden
//! field, so one parser reads what owners send and what the database holds.
//!
//! Archiving (XEP-0313 MUC archives) is `muc#roomconfig_enablearchiving` (Prosody's
//! `{urn:xmpp:mam:0}archive_enabled` is read as the same field) and the room's own retention
//! is the private field `franca#archive_retention_days` (0: the server's `[mam]
//! retention_days`); both are in the form only when the server lets rooms archive.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use franca_core::config::MucConfig;
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_DATA_FORMS, NS_MUC_ROOMCONFIG};
use franca_xml::Element;

/// Longest room name, description or password, in characters.
pub const MAX_TEXT_CHARS: usize = 1024;

/// Field of the stored form that keeps the XEP-0421 secret (never shown to owners).
const SECRET_FIELD: &str = "franca#occupant-id-secret";

/// Whether the room archives its groupchat messages.
pub const ARCHIVE_FIELD: &str = "muc#roomconfig_enablearchiving";
/// Prosody's name for [`ARCHIVE_FIELD`], accepted on submit.
const PROSODY_ARCHIVE_FIELD: &str = "{urn:xmpp:mam:0}archive_enabled";
/// Days the room keeps archived messages (0: as long as the server keeps them).
pub const RETENTION_FIELD: &str = "franca#archive_retention_days";

/// What the server lets rooms archive: present when `[muc] archive` and `[mam] enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Archiving {
    /// `[mam] retention_days`: the longest any archive keeps a message (0: forever).
    pub max_retention_days: u32,
}

/// Who may see occupants' real JIDs (`muc#roomconfig_whois`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whois {
    /// Semi-anonymous: moderators only.
    Moderators,
    /// Non-anonymous: every occupant.
    Anyone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    /// Listed in the service's disco#items.
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    /// Needed to join, when set.
    pub password: Option<String>,
    pub whois: Whois,
    /// Messages kept for history on join.
    pub history: u32,
    pub max_occupants: u32,
    /// Participants (not only moderators) may change the subject.
    pub change_subject: bool,
    /// Members may invite to a members-only room (admins and owners always may).
    pub allow_invites: bool,
    /// Key of the XEP-0421 occupant ids: random per room, kept with it.
    pub secret: [u8; 16],
    /// Archive groupchat messages (XEP-0313), when the server lets rooms archive.
    pub archive: bool,
    /// Days archived messages are kept; 0 is the server's `[mam] retention_days`.
    pub retention_days: u32,
}

impl RoomConfig {
    /// The configuration of a new room.
    pub fn new(limits: &MucConfig) -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            whois: Whois::Moderators,
            history: limits.history,
            max_occupants: limits.max_occupants,
            change_subject: false,
            allow_invites: false,
            secret: rand::random(),
            archive: true,
            retention_days: 0,
        }
    }

    /// Whether messages are archived now, under the server's `archiving`.
    pub fn archiving(&self, archiving: Option<Archiving>) -> bool {
        archiving.is_some() && self.archive
    }

    /// Days the archive keeps a message, the shorter of the room's and the server's (0:
    /// forever).
    pub fn retention_days(&self, archiving: Archiving) -> u32 {
        match (self.retention_days, archiving.max_retention_days) {
            (0, server) => server,
            (room, 0) => room,
            (room, server) => room.min(server),
        }
    }

    /// The `muc_*` features of the room's disco#info (XEP-0045 §6.4).
    pub fn features(&self) -> [&'static str; 6] {
        [
            if self.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if self.public {
                "muc_public"
            } else {
                "muc_hidden"
            },
            if self.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if self.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            match self.whois {
                Whois::Anyone => "muc_nonanonymous",
                Whois::Moderators => "muc_semianonymous",
            },
            if self.password.is_some() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
        ]
    }

    /// The form an owner fills in (§10.2), with the current values.
    pub fn to_form(&self, limits: &MucConfig, archiving: Option<Archiving>) -> Element {
        let mut form = Element::new("x", NS_DATA_FORMS).with_attr("type", "form");
        form.push(Element::new("title", NS_DATA_FORMS).with_text("Room configuration"));
        form.push(field("FORM_TYPE", "hidden", None, [NS_MUC_ROOMCONFIG]));
        for f in self.fields() {
            if archiving.is_none() && matches!(f.var, ARCHIVE_FIELD | RETENTION_FIELD) {
                continue;
            }
            let mut el = field(f.var, f.kind, Some(f.label), f.values);
            if f.var == "muc#roomconfig_whois" {
                el.push(option("Moderators only", "moderators"));
                el.push(option("Anyone", "anyone"));
            }
            if f.var == "muc#roomconfig_maxusers" {
                let mut choices = vec![10, 20, 30, 50, 100, 200, 500, 1000];
                choices.retain(|&n| n < limits.max_occupants);
                choices.push(limits.max_occupants);
                for n in choices {
                    el.push(option(&n.to_string(), &n.to_string()));
                }
            }
            form.push(el);
        }
        form
    }

    /// The fields and their current values, in form order.
    fn fields(&self) -> Vec<Field> {
        let b = |v: bool| vec![if v { "1" } else { "0" }.to_owned()];
        vec![
            Field::new(
                "muc#roomconfig_roomname",
                "text-single",
                "Name",
                vec![self.name.clone()],
            ),
            Field::new(
                "muc#roomconfig_roomdesc",
                "text-single",
                "Description",
                vec![self.description.clone()],
            ),
            Field::new(
                "muc#roomconfig_persistentroom",
                "boolean",
                "Persistent (kept when empty)",
                b(self.persistent),
            ),
            Field::new(
                "muc#roomconfig_publicroom",
                "boolean",
                "Listed in the room directory",
                b(self.public),
            ),
            Field::new(
                "muc#roomconfig_membersonly",
                "boolean",
                "Members only",
                b(self.members_only),
            ),
            Field::new(
                "muc#roomconfig_moderatedroom",
                "boolean",
                "Moderated (visitors need voice)",
                b(self.moderated),
            ),
            Field::new(
                "muc#roomconfig_passwordprotectedroom",
                "boolean",
                "Password required",
                b(self.password.is_some()),
            ),
            Field::new(
                "muc#roomconfig_roomsecret",
                "text-private",
                "Password",
                vec![self.password.clone().unwrap_or_default()],
            ),
            Field::new(
                "muc#roomconfig_whois",
                "list-single",
                "Who may see real JIDs",
                vec![
                    match self.whois {
                        Whois::Moderators => "moderators",
                        Whois::Anyone => "anyone",
                    }
                    .to_owned(),
                ],
            ),
            Field::new(
                "muc#maxhistoryfetch",
                "text-single",
                "Messages kept for history",
                vec![self.history.to_string()],
            ),
            Field::new(
                "muc#roomconfig_maxusers",
                "list-single",
                "Most occupants",
                vec![self.max_occupants.to_string()],
            ),
            Field::new(
                "muc#roomconfig_changesubject",
                "boolean",
                "Participants may change the subject",
                b(self.change_subject),
            ),
            Field::new(
                "muc#roomconfig_allowinvites",
                "boolean",
                "Members may invite",
                b(self.allow_invites),
            ),
            Field::new(
                ARCHIVE_FIELD,
                "boolean",
                "Archive messages (XEP-0313)",
                b(self.archive),
            ),
            Field::new(
                RETENTION_FIELD,
                "text-single",
                "Days archived messages are kept (0: the server's limit)",
                vec![self.retention_days.to_string()],
            ),
        ]
    }

    /// A copy with the values of a submitted form applied (§10.2): fields left out keep their
    /// value, unknown fields are ignored, a value out of range is `not-acceptable`.
    /// `archiving` bounds the retention an owner may choose; `None` reads any (a stored form).
    pub fn with_form(
        &self,
        form: &Element,
        limits: &MucConfig,
        archiving: Option<Archiving>,
    ) -> Result<RoomConfig, StanzaError> {
        let bad = |why: &str| Err(StanzaError::new(Cond::NotAcceptable).with_text(why));
        let mut c = self.clone();
        let mut password_flag = None;
        for f in form.elements().filter(|e| e.is("field", NS_DATA_FORMS)) {
            let Some(var) = f.attr("var") else { continue };
            let values: Vec<String> = f
                .elements()
                .filter(|v| v.is("value", NS_DATA_FORMS))
                .map(Element::text)
                .collect();
            let one = values.first().map(String::as_str).unwrap_or("");
            let flag = || match one.trim() {
                "1" | "true" => Ok(true),
                "0" | "false" | "" => Ok(false),
                _ => Err(StanzaError::new(Cond::NotAcceptable)
                    .with_text(format!("{var} is not a boolean"))),
            };
            let text = |what: &str| {
                if one.chars().count() > MAX_TEXT_CHARS {
                    Err(StanzaError::new(Cond::NotAcceptable)
                        .with_text(format!("{what} is too long")))
                } else {
                    Ok(one.to_owned())
                }
            };
            let number = || one.trim().parse::<u32>().ok();
            match var {
                "FORM_TYPE" if one != NS_MUC_ROOMCONFIG => return bad("wrong FORM_TYPE"),
                "muc#roomconfig_roomname" => c.name = text("the name")?,
                "muc#roomconfig_roomdesc" => c.description = text("the description")?,
                "muc#roomconfig_persistentroom" => c.persistent = flag()?,
                "muc#roomconfig_publicroom" => c.public = flag()?,
                "muc#roomconfig_membersonly" => c.members_only = flag()?,
                "muc#roomconfig_moderatedroom" => c.moderated = flag()?,
                "muc#roomconfig_passwordprotectedroom" => password_flag = Some(flag()?),
                "muc#roomconfig_roomsecret" => {
                    let p = text("the password")?;
                    c.password = (!p.is_empty()).then_some(p);
                }
                "muc#roomconfig_whois" => {
                    c.whois = match one {
                        "moderators" => Whois::Moderators,
                        "anyone" => Whois::Anyone,
                        _ => return bad("muc#roomconfig_whois is moderators or anyone"),
                    }
                }
                // Prosody's name for the same setting.
                "muc#maxhistoryfetch" | "muc#roomconfig_historylength" => match number() {
                    Some(n) if n <= limits.max_history => c.history = n,
                    _ => {
                        return bad(&format!(
                            "history is a number from 0 to {}",
                            limits.max_history
                        ));
                    }
                },
                "muc#roomconfig_maxusers" => match number() {
                    Some(n) if (1..=limits.max_occupants).contains(&n) => c.max_occupants = n,
                    // "none" (no limit) means the service's.
                    None if one == "none" || one.is_empty() => {
                        c.max_occupants = limits.max_occupants
                    }
                    _ => {
                        return bad(&format!(
                            "the most occupants is a number from 1 to {}",
                            limits.max_occupants
                        ));
                    }
                },
                "muc#roomconfig_changesubject" => c.change_subject = flag()?,
                "muc#roomconfig_allowinvites" => c.allow_invites = flag()?,
                ARCHIVE_FIELD | PROSODY_ARCHIVE_FIELD => c.archive = flag()?,
                RETENTION_FIELD => {
                    let max = archiving.map_or(0, |a| a.max_retention_days);
                    match number() {
                        Some(n) if max == 0 || n <= max => c.retention_days = n,
                        _ if max == 0 => return bad("the retention is a number of days"),
                        _ => {
                            return bad(&format!(
                                "the retention is a number of days from 0 to {max}"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        match password_flag {
            Some(false) => c.password = None,
            Some(true) if c.password.is_none() => return bad("a password is required"),
            _ => {}
        }
        Ok(c)
    }

    /// The stored form: the submitted form of every field, plus the secret.
    pub fn to_stored(&self) -> String {
        let mut form = Element::new("x", NS_DATA_FORMS).with_attr("type", "submit");
        form.push(field("FORM_TYPE", "hidden", None, [NS_MUC_ROOMCONFIG]));
        for f in self.fields() {
            form.push(field(f.var, f.kind, None, f.values));
        }
        form.push(field(
            SECRET_FIELD,
            "hidden",
            None,
            [B64.encode(self.secret)],
        ));
        form.to_xml()
    }

    /// Read a stored form back. Values beyond the current limits are clamped to them (the
    /// operator may have lowered them since).
    pub fn from_stored(form: &Element, limits: &MucConfig) -> Option<RoomConfig> {
        let mut lenient = limits.clone();
        lenient.max_history = u32::MAX;
        lenient.max_occupants = u32::MAX;
        let mut c = RoomConfig::new(limits)
            .with_form(form, &lenient, None)
            .ok()?;
        c.history = c.history.min(limits.max_history);
        c.max_occupants = c.max_occupants.min(limits.max_occupants);
        let secret = form
            .elements()
            .find(|f| f.attr("var") == Some(SECRET_FIELD))
            .and_then(|f| f.child("value", NS_DATA_FORMS))
            .and_then(|v| B64.decode(v.text()).ok())
            .and_then(|b| <[u8; 16]>::try_from(b).ok())?;
        c.secret = secret;
        Some(c)
    }
}

struct Field {
    var: &'static str,
    kind: &'static str,
    label: &'static str,
    values: Vec<String>,
}

impl Field {
    fn new(
        var: &'static str,
        kind: &'static str,
        label: &'static str,
        values: Vec<String>,
    ) -> Field {
        Field {
            var,
            kind,
            label,
            values,
        }
    }
}

fn field<V: Into<String>>(
    var: &str,
    kind: &str,
    label: Option<&str>,
    values: impl IntoIterator<Item = V>,
) -> Element {
    let mut f = Element::new("field", NS_DATA_FORMS)
        .with_attr("var", var)
        .with_attr("type", kind);
    if let Some(l) = label {
        f.set_attr("label", l);
    }
    for v in values {
        f.push(Element::new("value", NS_DATA_FORMS).with_text(v));
    }
    f
}

fn option(label: &str, value: &str) -> Element {
    Element::new("option", NS_DATA_FORMS)
        .with_attr("label", label)
        .with_child(Element::new("value", NS_DATA_FORMS).with_text(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xml;

    fn submit(fields: &str) -> Element {
        xml(&format!(
            "<x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE'><value>{NS_MUC_ROOMCONFIG}</value></field>{fields}</x>"
        ))
    }

    #[test]
    fn xep0045_10_2_a_submitted_form_changes_what_it_names() {
        let limits = MucConfig::default();
        let c = RoomConfig::new(&limits);
        let new = c
            .with_form(
                &submit(
                    "<field var='muc#roomconfig_roomname'><value>Tea</value></field>\
                     <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
                     <field var='muc#roomconfig_membersonly'><value>true</value></field>\
                     <field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>\
                     <field var='muc#roomconfig_roomsecret'><value>cauldron</value></field>\
                     <field var='muc#roomconfig_whois'><value>anyone</value></field>\
                     <field var='muc#roomconfig_historylength'><value>5</value></field>\
                     <field var='muc#roomconfig_maxusers'><value>30</value></field>\
                     <field var='x-unknown'><value>ignored</value></field>",
                ),
                &limits,
                None,
            )
            .expect("accepted");
        assert_eq!(new.name, "Tea");
        assert!(new.persistent && new.members_only && new.public && !new.moderated);
        assert_eq!(new.password.as_deref(), Some("cauldron"));
        assert_eq!(new.whois, Whois::Anyone);
        assert_eq!((new.history, new.max_occupants), (5, 30));
        assert_eq!(
            new.features(),
            [
                "muc_persistent",
                "muc_public",
                "muc_membersonly",
                "muc_unmoderated",
                "muc_nonanonymous",
                "muc_passwordprotected"
            ]
        );
        // Turning the password off drops it.
        let open = new
            .with_form(
                &submit(
                    "<field var='muc#roomconfig_passwordprotectedroom'><value>0</value></field>",
                ),
                &limits,
                None,
            )
            .expect("accepted");
        assert_eq!(open.password, None);
    }

    #[test]
    fn xep0045_10_2_values_out_of_bounds_are_not_acceptable() {
        let limits = MucConfig::default();
        let c = RoomConfig::new(&limits);
        for bad in [
            "<field var='muc#roomconfig_maxusers'><value>100000</value></field>".to_owned(),
            "<field var='muc#maxhistoryfetch'><value>1000</value></field>".to_owned(),
            "<field var='muc#roomconfig_persistentroom'><value>perhaps</value></field>".to_owned(),
            "<field var='muc#roomconfig_whois'><value>everybody</value></field>".to_owned(),
            "<field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>".to_owned(),
            format!(
                "<field var='muc#roomconfig_roomname'><value>{}</value></field>",
                "n".repeat(MAX_TEXT_CHARS + 1)
            ),
        ] {
            let err = c.with_form(&submit(&bad), &limits, None).expect_err(&bad);
            assert_eq!(err.condition, Cond::NotAcceptable, "{bad}");
        }
    }

    #[test]
    fn the_stored_form_reads_back_with_its_secret() {
        let limits = MucConfig::default();
        let mut c = RoomConfig::new(&limits);
        c.name = "Q&A <'\"".into();
        c.persistent = true;
        c.password = Some("pw".into());
        let stored = c.to_stored();
        let back = RoomConfig::from_stored(&xml(&stored), &limits).expect("reads back");
        assert_eq!(back, c);
        // Lowered limits clamp what was stored.
        let tighter = MucConfig {
            max_occupants: 10,
            ..MucConfig::default()
        };
        assert_eq!(
            RoomConfig::from_stored(&xml(&stored), &tighter).map(|c| c.max_occupants),
            Some(10)
        );
    }

    #[test]
    fn the_owner_form_lists_every_field_with_its_value() {
        let limits = MucConfig::default();
        let form = RoomConfig::new(&limits).to_form(
            &limits,
            Some(Archiving {
                max_retention_days: 0,
            }),
        );
        let vars: Vec<&str> = form.elements().filter_map(|f| f.attr("var")).collect();
        assert_eq!(vars.first(), Some(&"FORM_TYPE"));
        assert!(vars.contains(&"muc#roomconfig_persistentroom"));
        assert!(vars.contains(&"muc#roomconfig_whois"));
        assert!(!vars.contains(&SECRET_FIELD));
    }
}
