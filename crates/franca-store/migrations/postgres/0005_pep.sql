-- XEP-0060 PubSub nodes and items, for PEP (XEP-0163) on every account (postgres).
-- Keep in step with sqlite/0005_pep.sql.
--
-- The owner is the JID a node hangs off: an account's bare JID for PEP, later a PubSub
-- service's JID. There is no foreign key to users for that reason; removing an account
-- deletes its nodes explicitly. The node configuration is opaque text written by the
-- PubSub module. XEP-0049 private XML storage lives here too, as nodes of the account
-- whose names start with 'private:' (never published or advertised).

CREATE TABLE pubsub_nodes (
    owner TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (owner, node)
);

CREATE TABLE pubsub_items (
    owner TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    stamp_us BIGINT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (owner, node, id),
    FOREIGN KEY (owner, node) REFERENCES pubsub_nodes (owner, node) ON DELETE CASCADE
);

-- Newest first, for max_items trimming and retrieval.
CREATE INDEX pubsub_items_by_stamp ON pubsub_items (owner, node, stamp_us);
