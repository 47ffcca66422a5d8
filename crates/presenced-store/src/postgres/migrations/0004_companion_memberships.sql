-- Companion mode's membership view, as in SQLite's migration 0004: the
-- application-service transactions already applied, and the newest
-- membership event seen for each (room, user).
CREATE TABLE companion_as_txns (
    txn_id         TEXT PRIMARY KEY NOT NULL
);

CREATE TABLE companion_memberships (
    room_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    membership       TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    event_id         TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX companion_memberships_joined ON companion_memberships (membership);
