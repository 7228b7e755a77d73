-- Franca schema v1 (PostgreSQL). Keep table and column names identical to sqlite/0001_init.sql:
-- the store runs the same queries on both backends.
--
-- Every per-account table references users(jid) ON DELETE CASCADE, so deleting the users row
-- deletes all of the account's data.
-- Text keys use the "C" collation so ORDER BY sorts bytewise, like SQLite, whatever locale the
-- cluster was created with. Flags are SMALLINT 0/1 rather than BOOLEAN so that both backends
-- decode them the same way through sqlx's Any driver.

CREATE TABLE users (
    jid TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    domain TEXT COLLATE "C" NOT NULL,
    -- RFC 6121 §2.6 roster version, bumped in the same transaction as every roster change.
    roster_version BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX users_by_domain ON users (domain, jid);

CREATE TABLE credentials (
    user_jid TEXT COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    hash TEXT COLLATE "C" NOT NULL,
    salt BYTEA NOT NULL,
    iterations BIGINT NOT NULL,
    stored_key BYTEA NOT NULL,
    server_key BYTEA NOT NULL,
    PRIMARY KEY (user_jid, hash)
);

CREATE TABLE roster_items (
    user_jid TEXT COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    contact TEXT COLLATE "C" NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask SMALLINT NOT NULL DEFAULT 0 CHECK (ask IN (0, 1)),
    pending_in TEXT,
    approved SMALLINT NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),
    hidden SMALLINT NOT NULL DEFAULT 0 CHECK (hidden IN (0, 1)),
    PRIMARY KEY (user_jid, contact)
);

-- Groups in the order the client gave them.
CREATE TABLE roster_groups (
    user_jid TEXT COLLATE "C" NOT NULL,
    contact TEXT COLLATE "C" NOT NULL,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (user_jid, contact, position),
    FOREIGN KEY (user_jid, contact) REFERENCES roster_items (user_jid, contact) ON DELETE CASCADE
);

-- An identity never hands out an id twice, so a delete by a stale id can never hit a newer
-- message.
CREATE TABLE offline_messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_jid TEXT COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    stamp_us BIGINT NOT NULL,
    xml TEXT NOT NULL
);
CREATE INDEX offline_messages_by_user ON offline_messages (user_jid, id);

CREATE TABLE vcards (
    user_jid TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    xml TEXT NOT NULL
);

CREATE TABLE blocklist (
    user_jid TEXT COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    jid TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (user_jid, jid)
);

CREATE TABLE last_activity (
    user_jid TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    seconds BIGINT NOT NULL,
    status TEXT NOT NULL
);
