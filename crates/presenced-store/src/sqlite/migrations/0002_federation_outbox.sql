-- Outgoing federation presence, per destination: the latest state of each
-- local user not yet acknowledged by that server (spec W19). A newer state
-- replaces the row (new `seq`) but keeps its place in the queue
-- (`queued`), so a user whose presence changes often cannot starve the
-- others. The sender deletes a row after a successful transaction only if
-- its `seq` is still the one it sent.
CREATE TABLE destination_presence_outbox (
    destination TEXT NOT NULL,
    user_id TEXT NOT NULL,
    queued INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    presence TEXT NOT NULL,
    last_active_ts INTEGER NOT NULL,
    status_msg TEXT,
    currently_active INTEGER NOT NULL,
    PRIMARY KEY (destination, user_id)
);
CREATE INDEX destination_presence_outbox_queue
    ON destination_presence_outbox (destination, queued);
CREATE INDEX destination_presence_outbox_seq ON destination_presence_outbox (seq);
