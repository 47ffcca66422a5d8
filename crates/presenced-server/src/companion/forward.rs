//! Forwarding to Synapse: every request presenced does not answer itself
//! goes to Synapse unchanged, bodies streamed both ways.
