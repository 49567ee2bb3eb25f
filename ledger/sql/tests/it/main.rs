//! pyralog-sql's integration tests: one binary (DataFusion links once).
#![allow(unreachable_pub, missing_docs)]

mod fixture;
mod limits;
mod queries;
mod slt;
