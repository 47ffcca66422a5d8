-- Companion mode (a `synapse:` section): who shares rooms with whom, as
-- Synapse tells it, kept apart from presenced's own rooms (Synapse's rooms
-- have no events here, only each member's latest membership).

-- Application-service transactions already applied: Synapse re-sends a
-- transaction until it is acknowledged, so a second copy must change
-- nothing. `seq` orders them, so only the newest few thousand are kept
-- (Synapse re-sends only its oldest unacknowledged one).
CREATE TABLE companion_as_txns (
    seq            INTEGER PRIMARY KEY NOT NULL,
    txn_id         TEXT NOT NULL UNIQUE
);

-- The newest membership event seen for each (room, user). A change is
-- kept only if its (origin_server_ts, event_id) is above the stored one
-- (see the store's `companion.rs`), so a replayed old event cannot undo a
-- newer state.
CREATE TABLE companion_memberships (
    room_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    membership       TEXT NOT NULL,            -- invite | join | leave | ban | knock
    origin_server_ts INTEGER NOT NULL,
    event_id         TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX companion_memberships_joined ON companion_memberships (membership);
