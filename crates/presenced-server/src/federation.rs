//! Federation: our signing key, other servers' keys, X-Matrix auth, the
//! inbound `m.presence` EDU parser, and the outbound presence sender.
//!
//! Architecture invariant: presence reaches the engine only through the
//! presence driver; no key is fetched for a request its header refuses.
//!
//! presenced exchanges only presence with other homeservers: signed
//! `m.presence` EDUs in `PUT /_matrix/federation/v1/send/{txnId}`
//! transactions, authenticated with the X-Matrix scheme, plus the key
//! server every peer needs to check our signatures. Canonical JSON,
//! ed25519 signatures and the X-Matrix header come from ruma
//! (`ruma-signatures`, `ruma-federation-api`); nothing here hand-rolls
//! cryptography.
//!
//! # Layout
//!
//! - `signing`: our own key ([`signing::ServerSigningKey`]) in Synapse's
//!   key-file format; signs JSON and outgoing X-Matrix headers.
//! - `keys`: other servers' keys: [`keys::KeyFetcher`] (the edge that
//!   reaches them, implemented by the federation client) and
//!   [`keys::RemoteKeyCache`] (checked, cached, rate-limited refetch).
//! - `client`: [`client::FederationClient`], signed HTTPS requests to
//!   peers (and the real [`keys::KeyFetcher`]); `discovery` finds where a
//!   server name lives (well-known, SRV, 8448); `ip_filter` keeps every
//!   outbound connection off `ip_range_blacklist`.
//! - `auth`: checking an incoming request's X-Matrix authorization
//!   (destination, `federation_domain_whitelist`, signature).
//! - `transactions`: transaction IDs already processed, per origin.
//! - `presence_edu`: reading an incoming `m.presence` EDU entry by entry.
//! - `tls`: the certificate and key of `tls: true` listeners.
//! - `outgoing`: queued presence → transaction bodies (50 states per EDU,
//!   100 EDUs per transaction).
//! - `sender`: the outbox writer and one sender task per destination,
//!   sending through a [`sender::TransactionSender`] (the client).
//!
//! The HTTP handlers live with the other endpoints, under
//! `api/federation/`.

pub mod auth;
pub mod client;
pub mod discovery;
pub mod ip_filter;
pub mod keys;
pub mod outgoing;
pub mod presence_edu;
pub mod sender;
pub mod signing;
pub mod tls;
pub mod transactions;

pub use self::keys::{KeyFetcher, RemoteKeyCache};
pub use self::signing::ServerSigningKey;
