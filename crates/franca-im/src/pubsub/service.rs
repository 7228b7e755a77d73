//! Node and item operations of XEP-0060 for one owner, over [`franca_store::Store`]: create,
//! configure, publish (auto-create, publish-options, `max_items`), retrieve, retract, purge,
//! delete. The owner key is an account's bare JID for PEP; a PubSub service would pass its
//! own JID. Permission checks other than "does the node exist" are the caller's: it knows
//! who the owner is and how access is judged.

use super::config::NodeConfig;
use super::form::Form;
use super::{NS_PUBSUB, NS_PUBSUB_ERRORS};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_store::{PubsubItem, PubsubNode, Store, StoreError};
use franca_xml::Element;

/// One owner's nodes, with the server's bounds.
pub struct Service<'a> {
    pub store: &'a dyn Store,
    pub owner: &'a str,
    /// Nodes the owner may have.
    pub max_nodes: u32,
    /// Items a node may keep, whatever its `max_items` says.
    pub max_items: u32,
}

/// A node with its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub config: NodeConfig,
}

fn internal(e: StoreError) -> StanzaError {
    tracing::error!("pubsub storage error: {e}");
    StanzaError::new(Cond::InternalServerError)
}

/// `<conflict/>` with `<precondition-not-met/>` (XEP-0060 §7.1.5).
pub fn precondition_not_met() -> StanzaError {
    StanzaError::new(Cond::Conflict)
        .with_app(Element::new("precondition-not-met", NS_PUBSUB_ERRORS))
}

/// An error with a `pubsub#errors` condition.
pub fn pubsub_error(cond: Cond, app: &str) -> StanzaError {
    StanzaError::new(cond).with_app(Element::new(app, NS_PUBSUB_ERRORS))
}

/// XEP-0060 §7.1.3: what a `<publish/>` must carry, exactly one `<item/>` with exactly one
/// payload and, if it names one, a usable id (else `new_id()`). Returns the id and the item as
/// it is stored.
pub fn publish_request(
    publish: &Element,
    new_id: impl FnOnce() -> String,
) -> Result<(String, Element), StanzaError> {
    let mut items = publish.elements().filter(|e| e.is("item", NS_PUBSUB));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(pubsub_error(Cond::BadRequest, "item-required"));
    };
    let mut payloads = item.elements();
    let (Some(_), None) = (payloads.next(), payloads.next()) else {
        return Err(pubsub_error(Cond::BadRequest, "invalid-payload"));
    };
    let id = match item.attr("id") {
        Some(id) if id.is_empty() || id.len() > super::MAX_NAME_BYTES => {
            return Err(StanzaError::new(Cond::NotAcceptable));
        }
        Some(id) => id.to_owned(),
        None => new_id(),
    };
    let mut stored = Element::new("item", NS_PUBSUB).with_attr("id", id.as_str());
    stored.children = item.children.clone();
    Ok((id, stored))
}

/// Read a stored `<item/>` back.
pub fn parse_item(xml: &str) -> Option<Element> {
    let limits = franca_xml::Limits {
        max_stanza_bytes: xml.len().saturating_add(1024),
        max_depth: 1024,
        max_attrs: 1024,
    };
    franca_xml::read_document(xml.as_bytes(), limits, None)
        .ok()
        .flatten()
}

impl Service<'_> {
    pub async fn node(&self, name: &str) -> Result<Option<NodeConfig>, StanzaError> {
        let node = self
            .store
            .pubsub_node(self.owner, name)
            .await
            .map_err(internal)?;
        Ok(node.map(|n| NodeConfig::load(&n.config)))
    }

    /// The node's configuration, or `item-not-found`.
    pub async fn existing(&self, name: &str) -> Result<NodeConfig, StanzaError> {
        self.node(name)
            .await?
            .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))
    }

    pub async fn nodes(&self) -> Result<Vec<Node>, StanzaError> {
        let nodes = self
            .store
            .pubsub_nodes(self.owner)
            .await
            .map_err(internal)?;
        Ok(nodes
            .into_iter()
            .map(|n| Node {
                config: NodeConfig::load(&n.config),
                name: n.node,
            })
            .collect())
    }

    /// Store the configuration, creating the node if needed (`resource-constraint` at the cap).
    async fn put(&self, name: &str, config: &NodeConfig) -> Result<(), StanzaError> {
        let node = PubsubNode {
            node: name.to_owned(),
            config: config.store(),
        };
        if self
            .store
            .put_pubsub_node(self.owner, &node, self.max_nodes)
            .await
            .map_err(internal)?
        {
            Ok(())
        } else {
            Err(StanzaError::new(Cond::ResourceConstraint))
        }
    }

    /// §8.1: a new node; `conflict` when it exists.
    pub async fn create(&self, name: &str, config: &NodeConfig) -> Result<(), StanzaError> {
        if self.node(name).await?.is_some() {
            return Err(StanzaError::new(Cond::Conflict));
        }
        self.put(name, config).await
    }

    /// §8.2: replace the configuration of an existing node; a lower `max_items` applies at
    /// the next publish.
    pub async fn configure(&self, name: &str, config: &NodeConfig) -> Result<(), StanzaError> {
        self.existing(name).await?;
        self.put(name, config).await
    }

    /// §7.1: publish `item` (an `<item id/>` in the `pubsub` namespace, its id chosen by the
    /// caller). A missing node is created (XEP-0163 auto-create) with the defaults plus the
    /// publish-options; an existing one must meet them (§7.1.5). Returns the node's
    /// configuration, for the notifications.
    pub async fn publish(
        &self,
        name: &str,
        item: &Element,
        options: Option<&Form>,
        now_us: i64,
    ) -> Result<NodeConfig, StanzaError> {
        let id = item.attr("id").unwrap_or_default();
        let config = match self.node(name).await? {
            Some(config) => {
                if options.is_some_and(|o| !config.meets(o)) {
                    return Err(precondition_not_met());
                }
                config
            }
            None => {
                let mut config = NodeConfig::default();
                if let Some(o) = options {
                    config.apply(o).map_err(|_| precondition_not_met())?;
                }
                self.put(name, &config).await?;
                config
            }
        };
        if config.persist_items {
            let stored = PubsubItem {
                id: id.to_owned(),
                stamp_us: now_us,
                xml: item.to_xml(),
            };
            let max = config.max_items.effective(self.max_items);
            if !self
                .store
                .publish_pubsub_item(self.owner, name, &stored, max)
                .await
                .map_err(internal)?
            {
                // Deleted between the check and the write.
                return Err(StanzaError::new(Cond::ItemNotFound));
            }
        }
        Ok(config)
    }

    /// §6.5: items of an existing node, oldest first: these ids, or the newest `max`.
    pub async fn items(
        &self,
        name: &str,
        ids: &[String],
        max: u32,
    ) -> Result<Vec<Element>, StanzaError> {
        let mut items = self
            .store
            .pubsub_items(self.owner, name, ids, max)
            .await
            .map_err(internal)?;
        items.reverse();
        Ok(items
            .iter()
            .filter_map(|i| {
                let el = parse_item(&i.xml);
                if el.is_none() {
                    tracing::warn!(
                        owner = self.owner,
                        node = name,
                        id = i.id,
                        "stored item does not parse"
                    );
                }
                el
            })
            .filter(|e| e.is("item", NS_PUBSUB))
            .collect())
    }

    /// §7.2: delete one item; `item-not-found` when it is not there.
    pub async fn retract(&self, name: &str, id: &str) -> Result<NodeConfig, StanzaError> {
        let config = self.existing(name).await?;
        if self
            .store
            .retract_pubsub_item(self.owner, name, id)
            .await
            .map_err(internal)?
        {
            Ok(config)
        } else {
            Err(StanzaError::new(Cond::ItemNotFound))
        }
    }

    /// §8.5: delete every item.
    pub async fn purge(&self, name: &str) -> Result<NodeConfig, StanzaError> {
        let config = self.existing(name).await?;
        self.store
            .purge_pubsub_node(self.owner, name)
            .await
            .map_err(internal)?;
        Ok(config)
    }

    /// §8.4: delete the node and its items.
    pub async fn delete(&self, name: &str) -> Result<NodeConfig, StanzaError> {
        let config = self.existing(name).await?;
        self.store
            .delete_pubsub_node(self.owner, name)
            .await
            .map_err(internal)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pubsub::config::AccessModel;
    use std::sync::Arc;

    async fn store() -> Arc<dyn Store> {
        let store = franca_store::open("sqlite::memory:").await.unwrap();
        store.create_user("juliet@localhost", &[]).await.unwrap();
        store
    }

    fn item(id: &str, text: &str) -> Element {
        Element::new("item", NS_PUBSUB)
            .with_attr("id", id)
            .with_child(Element::new("p", "urn:test").with_text(text))
    }

    fn svc(store: &dyn Store) -> Service<'_> {
        Service {
            store,
            owner: "juliet@localhost",
            max_nodes: 2,
            max_items: 3,
        }
    }

    fn opts(k: &str, v: &str) -> Form {
        Form {
            form_type: None,
            fields: vec![(k.to_owned(), vec![v.to_owned()])],
        }
    }

    #[tokio::test]
    async fn xep0163_publish_auto_creates_with_defaults_and_keeps_the_last_item() {
        let store = store().await;
        let s = svc(&*store);
        let c = s.publish("n", &item("1", "a"), None, 1).await.unwrap();
        assert_eq!(c, NodeConfig::default());
        s.publish("n", &item("2", "b"), None, 2).await.unwrap();
        let items = s.items("n", &[], 10).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].attr("id"), Some("2"));
        assert_eq!(items[0], item("2", "b"));
    }

    #[tokio::test]
    async fn xep0060_7_1_5_publish_options_create_then_must_match() {
        let store = store().await;
        let s = svc(&*store);
        let open = opts("pubsub#access_model", "open");
        let c = s
            .publish("n", &item("1", "a"), Some(&open), 1)
            .await
            .unwrap();
        assert_eq!(c.access_model, AccessModel::Open);
        s.publish("n", &item("2", "a"), Some(&open), 2)
            .await
            .unwrap();
        let e = s
            .publish(
                "n",
                &item("3", "a"),
                Some(&opts("pubsub#access_model", "whitelist")),
                3,
            )
            .await
            .unwrap_err();
        assert_eq!(e.condition, Cond::Conflict);
        assert_eq!(e.app.unwrap().name, "precondition-not-met");
        let e = s
            .publish(
                "m",
                &item("3", "a"),
                Some(&opts("pubsub#max_items", "x")),
                3,
            )
            .await
            .unwrap_err();
        assert_eq!(e.condition, Cond::Conflict);
        assert!(s.node("m").await.unwrap().is_none(), "nothing created");
    }

    #[tokio::test]
    async fn xep0060_max_items_max_is_capped_and_nodes_are_bounded() {
        let store = store().await;
        let s = svc(&*store);
        let max = opts("pubsub#max_items", "max");
        for i in 0..5 {
            s.publish("n", &item(&i.to_string(), "x"), Some(&max), i)
                .await
                .unwrap();
        }
        let ids: Vec<_> = s
            .items("n", &[], 10)
            .await
            .unwrap()
            .iter()
            .map(|i| i.attr("id").unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["2", "3", "4"], "oldest first, capped at 3");
        s.publish("m", &item("1", "x"), None, 1).await.unwrap();
        let e = s.publish("o", &item("1", "x"), None, 1).await.unwrap_err();
        assert_eq!(e.condition, Cond::ResourceConstraint);
    }

    #[tokio::test]
    async fn xep0060_retract_purge_delete() {
        let store = store().await;
        let s = svc(&*store);
        let max = opts("pubsub#max_items", "max");
        s.publish("n", &item("1", "x"), Some(&max), 1)
            .await
            .unwrap();
        s.publish("n", &item("2", "x"), Some(&max), 2)
            .await
            .unwrap();
        s.retract("n", "1").await.unwrap();
        assert_eq!(
            s.retract("n", "1").await.unwrap_err().condition,
            Cond::ItemNotFound
        );
        assert_eq!(s.items("n", &["2".into()], 1).await.unwrap().len(), 1);
        s.purge("n").await.unwrap();
        assert!(s.items("n", &[], 10).await.unwrap().is_empty());
        s.delete("n").await.unwrap();
        assert_eq!(
            s.delete("n").await.unwrap_err().condition,
            Cond::ItemNotFound
        );
        assert_eq!(s.create("x", &NodeConfig::default()).await, Ok(()));
        assert_eq!(
            s.create("x", &NodeConfig::default())
                .await
                .unwrap_err()
                .condition,
            Cond::Conflict
        );
    }
}
