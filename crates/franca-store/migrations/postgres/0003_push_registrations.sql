-- XEP-0357 push registrations (PostgreSQL). Keep in step with sqlite/0003_push_registrations.sql.
--
-- One row per app server (its push service JID) and node an account enabled; the
-- publish-options data form the client gave is kept serialised and sent with every
-- notification (XEP-0357 §5). Enabling the same JID and node again replaces the options.

CREATE TABLE push_registrations (
    user_jid TEXT COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    service_jid TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    options TEXT,
    PRIMARY KEY (user_jid, service_jid, node)
);
