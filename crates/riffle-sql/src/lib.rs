//! Riffle's SQL front end: Flink-style DDL and Riffle's own statements on top of
//! DataFusion's SQL planner.
//!
//! Entry points: [`split_statements`] cuts a script into statements (with their line
//! numbers), and [`parse_statement`] turns one statement into a [`RiffleStatement`]. Every
//! statement DataFusion understands (queries, `INSERT INTO ... SELECT`, views) is planned by
//! DataFusion; Riffle handles `CREATE TABLE ... WITH (...)` (also `... AS query`), `SET
//! 'key' = 'value'`, `DROP TABLE`, `SHOW TABLES`, `DESCRIBE` and `EXPLAIN` itself, plans
//! models (`CREATE MODEL`, `SHOW MODELS`, `DESCRIBE MODEL`, `DROP MODEL`) and Flink's
//! `ML_PREDICT` onto Riffle's inference node, and rewrites Flink's `VECTOR_SEARCH` table
//! function into an exact top-k query.

#![warn(missing_docs)]

mod ddl;
mod insert_casts;
mod model;
mod named_args;
mod script;
mod set;
mod vector_search;

pub use ddl::{RiffleStatement, parse_statement};
pub use script::{ScriptStatement, split_statements};
