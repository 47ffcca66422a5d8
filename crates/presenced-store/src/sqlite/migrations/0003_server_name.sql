-- The server_name this database was made for (one row, written at the
-- first open; see server_name.rs). Every ID and token here carries it.
CREATE TABLE presenced_server_name (
    one            INTEGER PRIMARY KEY NOT NULL CHECK (one = 1),
    server_name    TEXT NOT NULL
);
