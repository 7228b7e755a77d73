-- XEP-0045 §7.10/§7.12 reserved room nicknames (SQLite).
-- Keep in step with postgres/0009_muc_nicks.sql.
--
-- The nickname a member (or admin, or owner) registered with the room, kept with the
-- affiliation it belongs to: it goes when the affiliation does. NULL: none reserved. That a
-- nickname is reserved by one user only is checked by the server, which compares nicknames
-- the RFC 8266 way (case and width folded), before it writes.

ALTER TABLE muc_affiliations ADD COLUMN nick TEXT;
