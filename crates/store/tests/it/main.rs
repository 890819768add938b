//! The storage conformance suite: every case runs on SQLite and on PostgreSQL, against the
//! same `Store` API.

mod claims;
mod conformance;
mod events;
mod fixtures;
mod retention;
