//! The clock the server goes by is the store's: one clock for every time gantry records
//! or compares (see [`gantry_store::Clock`]).

pub use gantry_store::Clock;
