//! Node configuration (XEP-0060 §16.4.4 `pubsub#node_config`): the access model, `max_items`,
//! persistence, notification switches, and who may see a `roster` or `whitelist` node. It is
//! stored as a submitted data form (the store keeps it as opaque text), which is also what
//! `#owner` configure shows and publish-options (§7.1.5) are compared with.
//!
//! Fields this server does not model (`pubsub#title`, `pubsub#deliver_payloads`, …) are
//! accepted and ignored, in configuration and in publish-options alike, so a client asking for
//! them is not refused over a setting that changes nothing here.

use super::NS_PUBSUB_NODE_CONFIG;
use super::form::{Form, boolean, field, new_form};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_xml::Element;

/// Who may retrieve items and get notifications (XEP-0060 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessModel {
    Open,
    /// Contacts subscribed to the owner's presence (the PEP default, XEP-0163 §4.2).
    Presence,
    /// Contacts in one of the `roster_groups` of the owner's roster.
    Roster,
    /// The owner and the JIDs listed in `whitelist`.
    Whitelist,
}

impl AccessModel {
    pub fn name(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }
    fn from_name(s: &str) -> Option<AccessModel> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }
}

/// `pubsub#max_items`: a number, or `max` (the server's cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxItems {
    Count(u32),
    Max,
}

impl MaxItems {
    fn parse(s: &str) -> Option<MaxItems> {
        match s {
            "max" => Some(MaxItems::Max),
            n => n.parse().ok().filter(|n| *n > 0).map(MaxItems::Count),
        }
    }
    fn text(self) -> String {
        match self {
            MaxItems::Max => "max".to_owned(),
            MaxItems::Count(n) => n.to_string(),
        }
    }
    /// How many items are kept, given the server's cap.
    pub fn effective(self, cap: u32) -> u32 {
        match self {
            MaxItems::Max => cap.max(1),
            MaxItems::Count(n) => n.min(cap).max(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub access_model: AccessModel,
    pub max_items: MaxItems,
    pub persist_items: bool,
    pub notify_retract: bool,
    pub notify_delete: bool,
    /// `pubsub#roster_groups_allowed`, for the `roster` model.
    pub roster_groups: Vec<String>,
    /// Bare JIDs besides the owner that a `whitelist` node admits (XEP-0060 affiliations of
    /// `member`, kept with the configuration).
    pub whitelist: Vec<String>,
    /// Bare JIDs owning a node of a PubSub service (XEP-0060 `owner` affiliations). Empty
    /// for PEP, whose owner is the account itself.
    pub owners: Vec<String>,
}

impl Default for NodeConfig {
    /// The PEP defaults of XEP-0163 §4: presence access, the last item kept.
    fn default() -> NodeConfig {
        NodeConfig {
            access_model: AccessModel::Presence,
            max_items: MaxItems::Count(1),
            persist_items: true,
            notify_retract: true,
            notify_delete: true,
            roster_groups: Vec::new(),
            whitelist: Vec::new(),
            owners: Vec::new(),
        }
    }
}

/// Private field for the whitelist (not a XEP-0060 field; affiliations are not a form).
const WHITELIST: &str = "franca#whitelist";
/// Private field for the owners of a PubSub service's node.
const OWNERS: &str = "franca#owners";

/// Whether a form field is one of this server's private ones, which only the server writes
/// (a client's form must not set them).
pub fn is_private_field(var: &str) -> bool {
    var.starts_with("franca#")
}

fn bad_value() -> StanzaError {
    StanzaError::new(Cond::NotAcceptable)
}

impl NodeConfig {
    /// Apply the fields of a submitted configuration form. Unknown values of known fields
    /// are `not-acceptable`; unknown fields are ignored (see the module documentation).
    pub fn apply(&mut self, form: &Form) -> Result<(), StanzaError> {
        for (var, values) in &form.fields {
            let first = values.first().map(String::as_str).unwrap_or_default();
            match var.as_str() {
                "pubsub#access_model" => {
                    self.access_model = AccessModel::from_name(first).ok_or_else(bad_value)?
                }
                "pubsub#max_items" => {
                    self.max_items = MaxItems::parse(first).ok_or_else(bad_value)?
                }
                "pubsub#persist_items" => {
                    self.persist_items = boolean(first).ok_or_else(bad_value)?
                }
                "pubsub#notify_retract" => {
                    self.notify_retract = boolean(first).ok_or_else(bad_value)?
                }
                "pubsub#notify_delete" => {
                    self.notify_delete = boolean(first).ok_or_else(bad_value)?
                }
                "pubsub#roster_groups_allowed" => self.roster_groups = values.clone(),
                WHITELIST => self.whitelist = values.clone(),
                OWNERS => self.owners = values.clone(),
                _ => {}
            }
        }
        Ok(())
    }

    /// XEP-0060 §7.1.5: whether every publish option matches the node's configuration.
    pub fn meets(&self, options: &Form) -> bool {
        let mut wanted = self.clone();
        wanted.apply(options).is_ok() && wanted == *self
    }

    /// The configuration as a form: `submit` for storage, `form` for `#owner` configure.
    pub fn to_form(&self, kind: &str) -> Element {
        let mut x = new_form(kind, NS_PUBSUB_NODE_CONFIG);
        let flag = |b: bool| if b { "true" } else { "false" };
        x.push(field("pubsub#access_model", &[self.access_model.name()]));
        x.push(field("pubsub#max_items", &[&self.max_items.text()]));
        x.push(field("pubsub#persist_items", &[flag(self.persist_items)]));
        x.push(field("pubsub#notify_retract", &[flag(self.notify_retract)]));
        x.push(field("pubsub#notify_delete", &[flag(self.notify_delete)]));
        let groups: Vec<&str> = self.roster_groups.iter().map(String::as_str).collect();
        x.push(field("pubsub#roster_groups_allowed", &groups));
        if kind != "form" {
            let members: Vec<&str> = self.whitelist.iter().map(String::as_str).collect();
            x.push(field(WHITELIST, &members));
            if !self.owners.is_empty() {
                let owners: Vec<&str> = self.owners.iter().map(String::as_str).collect();
                x.push(field(OWNERS, &owners));
            }
        }
        x
    }

    /// The stored text.
    pub fn store(&self) -> String {
        self.to_form("submit").to_xml()
    }

    /// Read the stored text back; a damaged record falls back to the most private settings
    /// (whitelist) rather than failing or exposing items.
    pub fn load(text: &str) -> NodeConfig {
        let parsed = franca_xml::read_document(
            text.as_bytes(),
            franca_xml::Limits {
                max_stanza_bytes: text.len().saturating_add(1024),
                max_depth: 16,
                max_attrs: 16,
            },
            None,
        )
        .ok()
        .flatten()
        .and_then(|x| Form::parse(&x).ok());
        let mut config = NodeConfig::default();
        match parsed.map(|f| config.apply(&f)) {
            Some(Ok(())) => config,
            _ => NodeConfig {
                access_model: AccessModel::Whitelist,
                ..NodeConfig::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::xml;

    fn options(fields: &[(&str, &str)]) -> Form {
        Form {
            form_type: Some(super::super::NS_PUBSUB_PUBLISH_OPTIONS.to_owned()),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect(),
        }
    }

    #[test]
    fn xep0060_16_4_4_config_round_trips_through_storage() {
        let mut c = NodeConfig::default();
        c.apply(&options(&[
            ("pubsub#access_model", "roster"),
            ("pubsub#max_items", "max"),
            ("pubsub#persist_items", "0"),
        ]))
        .unwrap();
        c.roster_groups = vec!["Friends".into(), "a<&>b".into()];
        c.whitelist = vec!["x@y".into()];
        assert_eq!(NodeConfig::load(&c.store()), c);
    }

    #[test]
    fn xep0060_7_1_5_preconditions_compare_with_the_node() {
        let c = NodeConfig::default();
        assert!(c.meets(&options(&[("pubsub#access_model", "presence")])));
        assert!(c.meets(&options(&[("pubsub#persist_items", "true")])));
        assert!(c.meets(&options(&[("pubsub#title", "ignored")])));
        assert!(!c.meets(&options(&[("pubsub#access_model", "open")])));
        assert!(!c.meets(&options(&[("pubsub#max_items", "max")])));
        assert!(!c.meets(&options(&[("pubsub#access_model", "authorize")])));
    }

    #[test]
    fn xep0060_max_items_is_capped() {
        assert_eq!(MaxItems::Max.effective(256), 256);
        assert_eq!(MaxItems::Count(1000).effective(256), 256);
        assert_eq!(MaxItems::Count(5).effective(256), 5);
        assert_eq!(MaxItems::parse("0"), None);
        assert_eq!(MaxItems::parse("-1"), None);
    }

    #[test]
    fn a_damaged_record_is_private() {
        assert_eq!(NodeConfig::load("<x").access_model, AccessModel::Whitelist);
        let form = xml(
            "<x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>open</value></field></x>",
        );
        assert_eq!(
            NodeConfig::load(&form.to_xml()).access_model,
            AccessModel::Open
        );
    }
}
