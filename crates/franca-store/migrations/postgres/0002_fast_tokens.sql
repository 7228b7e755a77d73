-- XEP-0484 FAST tokens (PostgreSQL). Keep in step with sqlite/0002_fast_tokens.sql.
--
-- Tokens are stored hashed (SHA-256 of the token, `token_hash`), never as issued. Each client
-- of an account (its XEP-0388 user-agent id) has at most two: the one it logs in with
-- ('current') and one just issued that it has not used yet ('new'), as XEP-0484 §5 suggests.
-- `count` is the highest replay counter accepted for the token.

CREATE TABLE fast_tokens (
    user_jid TEXT COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    client_id TEXT COLLATE "C" NOT NULL,
    slot TEXT COLLATE "C" NOT NULL CHECK (slot IN ('current', 'new')),
    token_hash BYTEA NOT NULL,
    mechanism TEXT NOT NULL,
    expires_us BIGINT NOT NULL,
    count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_jid, client_id, slot)
);
