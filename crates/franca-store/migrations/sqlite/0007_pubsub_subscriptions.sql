-- XEP-0060 explicit subscriptions (sqlite), for the PubSub service at pubsub.<domain>.
-- Keep in step with postgres/0007_pubsub_subscriptions.sql.
--
-- PEP picks its recipients from presence and entity capabilities and stores none; a
-- standalone service notifies the JIDs that subscribed to a node. One row per subscriber
-- (a bare or full JID, local or not, so no foreign key to users); the node's deletion
-- removes its subscriptions.

CREATE TABLE pubsub_subscriptions (
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (owner, node, jid),
    FOREIGN KEY (owner, node) REFERENCES pubsub_nodes (owner, node) ON DELETE CASCADE
) WITHOUT ROWID;
