//! Who may see a node (XEP-0060 §4.5 access models, XEP-0163 §4.2 for PEP): the owner always;
//! others by the node's model, judged from the owner's roster entry for them. A refusal says
//! why, with the `pubsub#errors` condition of XEP-0060 §6.5.9.

use super::NS_PUBSUB_ERRORS;
use super::config::{AccessModel, NodeConfig};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_store::{RosterItem, Subscription};
use franca_xml::Element;

/// Whether `requester` (a bare JID) may retrieve items of a node of `owner` and be notified.
/// `item` is the owner's roster entry for the requester, when there is one.
pub fn may_see(
    config: &NodeConfig,
    owner: &str,
    requester: &str,
    item: Option<&RosterItem>,
) -> Result<(), StanzaError> {
    if owner == requester {
        return Ok(());
    }
    let subscribed =
        item.is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
    let refused = |cond: Cond, app: &str| {
        Err(StanzaError::new(cond).with_app(Element::new(app, NS_PUBSUB_ERRORS)))
    };
    match config.access_model {
        AccessModel::Open => Ok(()),
        AccessModel::Presence if subscribed => Ok(()),
        AccessModel::Presence => refused(Cond::NotAuthorized, "presence-subscription-required"),
        AccessModel::Roster
            if item.is_some_and(|i| i.groups.iter().any(|g| config.roster_groups.contains(g))) =>
        {
            Ok(())
        }
        AccessModel::Roster => refused(Cond::NotAuthorized, "not-in-roster-group"),
        AccessModel::Whitelist if config.whitelist.iter().any(|j| j == requester) => Ok(()),
        AccessModel::Whitelist => refused(Cond::NotAllowed, "closed-node"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn item(sub: Subscription, groups: &[&str]) -> RosterItem {
        RosterItem {
            jid: "romeo@localhost".into(),
            name: None,
            subscription: sub,
            ask: false,
            pending_in: None,
            approved: false,
            hidden: false,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn config(model: AccessModel) -> NodeConfig {
        NodeConfig {
            access_model: model,
            roster_groups: vec!["Friends".into()],
            whitelist: vec!["nurse@localhost".into()],
            ..NodeConfig::default()
        }
    }

    const OWNER: &str = "juliet@localhost";
    const ROMEO: &str = "romeo@localhost";

    #[test]
    fn xep0060_4_5_owner_sees_everything() {
        for m in [
            AccessModel::Whitelist,
            AccessModel::Presence,
            AccessModel::Roster,
        ] {
            assert!(may_see(&config(m), OWNER, OWNER, None).is_ok());
        }
    }

    #[test]
    fn xep0163_presence_model_needs_a_subscription_from_the_owner() {
        let c = config(AccessModel::Presence);
        assert!(may_see(&c, OWNER, ROMEO, Some(&item(Subscription::From, &[]))).is_ok());
        assert!(may_see(&c, OWNER, ROMEO, Some(&item(Subscription::Both, &[]))).is_ok());
        let e = may_see(&c, OWNER, ROMEO, Some(&item(Subscription::To, &[]))).unwrap_err();
        assert_eq!(e.condition, Cond::NotAuthorized);
        assert!(may_see(&c, OWNER, ROMEO, None).is_err());
    }

    #[test]
    fn xep0060_roster_whitelist_and_open_models() {
        let r = config(AccessModel::Roster);
        assert!(
            may_see(
                &r,
                OWNER,
                ROMEO,
                Some(&item(Subscription::None, &["Friends"]))
            )
            .is_ok()
        );
        assert!(may_see(&r, OWNER, ROMEO, Some(&item(Subscription::Both, &["Work"]))).is_err());
        let w = config(AccessModel::Whitelist);
        assert!(may_see(&w, OWNER, "nurse@localhost", None).is_ok());
        let e = may_see(&w, OWNER, ROMEO, Some(&item(Subscription::Both, &[]))).unwrap_err();
        assert_eq!(e.condition, Cond::NotAllowed);
        assert!(may_see(&config(AccessModel::Open), OWNER, "x@elsewhere", None).is_ok());
    }
}
