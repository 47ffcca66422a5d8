-- As SQLite's migration 0005: every membership change companion mode's
-- view kept, in storage order, for the nodes of a cluster to follow.
-- `seq` is assigned under the view's advisory write lock (MAX + 1), so
-- changes become visible in `seq` order and no reader skips a late commit;
-- a plain column, not an identity, so `port-db` needs no sequence fix-up.
CREATE TABLE companion_membership_changes (
    seq              BIGINT PRIMARY KEY,
    room_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    sender           TEXT NOT NULL,
    membership       TEXT NOT NULL,
    previous         TEXT,
    origin_server_ts BIGINT NOT NULL,
    event_id         TEXT NOT NULL
);
