//! The membership bootstrap: every room's members read through Synapse's
//! admin API at first start, on `presenced synapse-resync`, and
//! periodically, reconciled with what the transactions said.
