-- The membership outbox (cluster mode's membership feed, issue 16).
--
-- Every membership change writes a row here in its own transaction. Ids
-- come from one head row updated in that transaction: its row lock makes
-- transactions take ids in commit order, so a reader that has seen id N
-- has seen every id below N (a sequence would commit out of order and a
-- relay could skip a late commit).
CREATE TABLE membership_outbox_head (
    one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last_id BIGINT NOT NULL
);
INSERT INTO membership_outbox_head (one, last_id) VALUES (TRUE, 0);

CREATE TABLE membership_outbox (
    id         BIGINT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    -- The change's position in the room event stream.
    stream     BIGINT NOT NULL
);
