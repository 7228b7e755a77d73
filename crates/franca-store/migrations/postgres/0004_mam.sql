-- XEP-0313 message archives (PostgreSQL). Keep in step with sqlite/0004_mam.sql.
--
-- One row per archived message, keyed by its owner (an account's bare JID, later a room's
-- JID: no foreign key to users, so rooms can use the same table; removing an account deletes
-- its rows explicitly). Ids sort by time (see franca-im's mam::id), so the archive order is
-- the id order (COLLATE "C": byte order) and one index serves paging and start/end filters:
--   (owner, id)        paging over a whole archive, and before-id/after-id lookups;
--   (owner, with_jid, id)  paging over one conversation;
--   (stamp_us)          the retention job's batched deletes across all owners.

CREATE TABLE mam_messages (
    owner TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    stamp_us BIGINT NOT NULL,
    with_jid TEXT COLLATE "C" NOT NULL,
    outgoing SMALLINT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE INDEX mam_messages_owner_with ON mam_messages (owner, with_jid, id);
CREATE INDEX mam_messages_stamp ON mam_messages (stamp_us);

-- XEP-0313 §7 preferences; the always/never lists are bare JIDs, one per line.
CREATE TABLE mam_prefs (
    user_jid TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    default_mode TEXT NOT NULL,
    always_jids TEXT NOT NULL,
    never_jids TEXT NOT NULL
);
