-- Companion mode in a cluster: every membership change the view kept, in
-- the order it was stored, so each node's presence engine can follow the
-- changes another node received from Synapse (`companion_memberships`
-- holds only the latest state, which cannot say what changed or when).
-- `previous` is the membership the change replaced (NULL: none seen).
-- Old rows are pruned as new ones arrive (the store's `companion.rs`).
CREATE TABLE companion_membership_changes (
    seq              INTEGER PRIMARY KEY NOT NULL,
    room_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    sender           TEXT NOT NULL,
    membership       TEXT NOT NULL,
    previous         TEXT,
    origin_server_ts INTEGER NOT NULL,
    event_id         TEXT NOT NULL
);
