-- Accounts, devices, rooms, the room timeline and filters.
-- Table names say what they map, key first (userid_..., roomid_...).

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY NOT NULL,
    password_hash  TEXT,                          -- NULL: cannot log in with a password
    admin          INTEGER NOT NULL DEFAULT 0,
    deactivated    INTEGER NOT NULL DEFAULT 0,
    created_ts     INTEGER NOT NULL
);

CREATE TABLE devices (
    user_id        TEXT NOT NULL REFERENCES users(user_id),
    device_id      TEXT NOT NULL,
    display_name   TEXT,
    last_seen_ts   INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Only a SHA-256 of each token is kept, so a leaked database leaks no
-- usable tokens.
CREATE TABLE access_tokens (
    token_hash     TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    created_ts     INTEGER NOT NULL
);
CREATE INDEX access_tokens_by_device ON access_tokens (user_id, device_id);

CREATE TABLE rooms (
    room_id        TEXT PRIMARY KEY NOT NULL,
    creator        TEXT NOT NULL,
    created_ts     INTEGER NOT NULL
);

-- The per-room timeline. `stream` is the server-wide stream ordering that
-- /sync tokens are made of; AUTOINCREMENT keeps it strictly increasing even
-- after deletions.
CREATE TABLE events (
    stream           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL REFERENCES rooms(room_id),
    sender           TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    state_key        TEXT,                        -- NULL for message events
    content          TEXT NOT NULL,               -- JSON
    origin_server_ts INTEGER NOT NULL,
    txn_device_id    TEXT,                        -- set for client sends with a txn id
    txn_id           TEXT
);
CREATE INDEX events_by_room ON events (room_id, stream);
CREATE INDEX events_state ON events (room_id, event_type, state_key, stream)
    WHERE state_key IS NOT NULL;

-- Transaction ids make PUT /send idempotent per (user, device, txn).
CREATE UNIQUE INDEX events_by_txn ON events (sender, txn_device_id, txn_id)
    WHERE txn_id IS NOT NULL;

-- Current membership of each (room, user), pointing at its event.
CREATE TABLE roomid_userid_membership (
    room_id        TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    membership     TEXT NOT NULL,                 -- invite | join | leave
    stream         INTEGER NOT NULL,              -- of the membership event
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_by_user ON roomid_userid_membership (user_id, stream);

CREATE TABLE userid_filterid_filter (
    user_id        TEXT NOT NULL,
    filter_id      INTEGER NOT NULL,
    filter_json    TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
