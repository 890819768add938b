//! Integration tests of gantry-server (being built).
