//! Who shares rooms with whom in companion mode: the membership changes
//! Synapse pushes as application-service transactions, stored and applied
//! to presence once.
