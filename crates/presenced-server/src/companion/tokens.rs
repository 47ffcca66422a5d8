//! Access tokens in companion mode: Synapse answers for each one
//! (`/account/whoami`); the answers are cached briefly.
