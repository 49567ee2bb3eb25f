//! pyralog-sql's integration tests: one binary (DataFusion links once).
#![allow(unreachable_pub, missing_docs)]

mod cache;
mod fixture;
mod limits;
mod queries;
mod slt;
