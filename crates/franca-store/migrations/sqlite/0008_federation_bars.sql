-- Accounts barred from federating (SQLite). Keep in step with postgres/0008_federation_bars.sql.
--
-- A row means the account may not exchange stanzas with remote domains (issue 6 §2). No row:
-- the server's [s2s] policy alone decides. Its own table, not a users column, so the group and
-- role permissions planned later can be added as tables beside it. Removing the account removes
-- its row (ON DELETE CASCADE).

CREATE TABLE federation_bars (
    user_jid TEXT NOT NULL PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    since_us INTEGER NOT NULL
) WITHOUT ROWID;
