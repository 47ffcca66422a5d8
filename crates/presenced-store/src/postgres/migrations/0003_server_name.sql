-- The server_name this database was made for (one row, written at the
-- first open; see server_name.rs), as in SQLite's migration 0003.
CREATE TABLE presenced_server_name (
    one            BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    server_name    TEXT NOT NULL
);
