-- XEP-0045 persistent rooms (SQLite). Keep in step with postgres/0006_muc.sql.
--
-- One row per persistent room (temporary rooms are never stored): its configuration, kept as
-- the muc#roomconfig form the server serialised (and the occupant-id secret in it), and its
-- subject. The affiliations (owner, admin, member, outcast) are keyed by bare JID, local or
-- not, so they do not reference accounts: removing an account leaves its affiliations as
-- Prosody and ejabberd do. Removing the room removes them.

CREATE TABLE muc_rooms (
    room_jid TEXT NOT NULL PRIMARY KEY,
    service TEXT NOT NULL,
    config TEXT NOT NULL,
    subject TEXT,
    created_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX muc_rooms_by_service ON muc_rooms (service, room_jid);

CREATE TABLE muc_affiliations (
    room_jid TEXT NOT NULL REFERENCES muc_rooms (room_jid) ON DELETE CASCADE,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
    reason TEXT,
    PRIMARY KEY (room_jid, jid)
) WITHOUT ROWID;
