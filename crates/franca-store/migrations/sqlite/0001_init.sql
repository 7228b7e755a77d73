-- Franca schema v1 (SQLite). Keep table and column names identical to postgres/0001_init.sql:
-- the store runs the same queries on both backends.
--
-- Every per-account table references users(jid) ON DELETE CASCADE, so deleting the users row
-- deletes all of the account's data (the connection enables PRAGMA foreign_keys).
-- Only INTEGER, TEXT and BLOB column types are used: sqlx's Any driver maps nothing else.

CREATE TABLE users (
    jid TEXT NOT NULL PRIMARY KEY,
    domain TEXT NOT NULL,
    -- RFC 6121 §2.6 roster version, bumped in the same transaction as every roster change.
    roster_version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX users_by_domain ON users (domain, jid);

CREATE TABLE credentials (
    user_jid TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    hash TEXT NOT NULL,
    salt BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (user_jid, hash)
) WITHOUT ROWID;

CREATE TABLE roster_items (
    user_jid TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    contact TEXT NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask INTEGER NOT NULL DEFAULT 0 CHECK (ask IN (0, 1)),
    pending_in TEXT,
    approved INTEGER NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),
    hidden INTEGER NOT NULL DEFAULT 0 CHECK (hidden IN (0, 1)),
    PRIMARY KEY (user_jid, contact)
) WITHOUT ROWID;

-- Groups in the order the client gave them.
CREATE TABLE roster_groups (
    user_jid TEXT NOT NULL,
    contact TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (user_jid, contact, position),
    FOREIGN KEY (user_jid, contact) REFERENCES roster_items (user_jid, contact) ON DELETE CASCADE
) WITHOUT ROWID;

-- AUTOINCREMENT: ids are never reused, so a delete by a stale id can never hit a newer message.
CREATE TABLE offline_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_jid TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    stamp_us INTEGER NOT NULL,
    xml TEXT NOT NULL
);
CREATE INDEX offline_messages_by_user ON offline_messages (user_jid, id);

CREATE TABLE vcards (
    user_jid TEXT NOT NULL PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    xml TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE blocklist (
    user_jid TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    jid TEXT NOT NULL,
    PRIMARY KEY (user_jid, jid)
) WITHOUT ROWID;

CREATE TABLE last_activity (
    user_jid TEXT NOT NULL PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    seconds INTEGER NOT NULL,
    status TEXT NOT NULL
) WITHOUT ROWID;
