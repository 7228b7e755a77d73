-- XEP-0313 message archives (SQLite). Keep in step with postgres/0004_mam.sql.
--
-- One row per archived message, keyed by its owner (an account's bare JID, later a room's
-- JID: no foreign key to users, so rooms can use the same table; removing an account deletes
-- its rows explicitly). Ids sort by time (see franca-im's mam::id), so the archive order is
-- the id order and one index serves paging and the start/end filters:
--   (owner, id)        paging over a whole archive, and before-id/after-id lookups;
--   (owner, with_jid, id)  paging over one conversation;
--   (stamp_us)          the retention job's batched deletes across all owners.
-- A rowid table, not WITHOUT ROWID: rows carry the message XML, too large to sit in the
-- key's b-tree well; the indexes stay small and queries fetch rows by rowid.

CREATE TABLE mam_messages (
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    stamp_us INTEGER NOT NULL,
    with_jid TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    xml TEXT NOT NULL
);
CREATE UNIQUE INDEX mam_messages_owner_id ON mam_messages (owner, id);
CREATE INDEX mam_messages_owner_with ON mam_messages (owner, with_jid, id);
CREATE INDEX mam_messages_stamp ON mam_messages (stamp_us);

-- XEP-0313 §7 preferences; the always/never lists are bare JIDs, one per line.
CREATE TABLE mam_prefs (
    user_jid TEXT NOT NULL PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    default_mode TEXT NOT NULL,
    always_jids TEXT NOT NULL,
    never_jids TEXT NOT NULL
);
