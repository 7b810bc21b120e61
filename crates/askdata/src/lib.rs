//! Ask-Data (问数): business questions to SQL, numbers and charts.
//!
//! The pipeline ([`ask`]): the schema catalogue read from the live database ([`catalog`]), a
//! prompt with what the question names, normalised (values, glossary columns, the period and a
//! top-n from [`period`]), the model's JSON reply, the SQL guard ([`guard`]), execution on a
//! read-only connection under a time limit ([`exec`]), a chart as an ECharts option, SVG and PNG
//! ([`chart`]) and a one-sentence answer. Connectors ([`source`]), the service the HTTP API
//! wraps ([`service`]), the demo database ([`demo`]), the teaching, evaluation and fresh sets
//! and their scoring ([`eval`]).
#![warn(missing_docs)]

pub mod ask;
pub mod catalog;
pub mod chart;
pub mod compose;
pub mod concepts;
pub mod cues;
pub mod demo;
pub mod eval;
pub mod exec;
pub mod guard;
pub mod period;
pub mod service;
pub mod shape;
pub mod source;

/// Ask-Data errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file would be overwritten.
    #[error("{0} already exists; choose a new path")]
    Exists(std::path::PathBuf),
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A query ran past its time limit and was interrupted.
    #[error("the query ran longer than {0:?} and was stopped")]
    Timeout(std::time::Duration),
    /// A query failed in the database.
    #[error("{0}")]
    Query(String),
    /// A CSV file could not be imported.
    #[error("{0}: {1}")]
    Csv(std::path::PathBuf, String),
    /// Something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// File I/O.
    #[error("{0}: {1}")]
    Io(std::path::PathBuf, std::io::Error),
}

/// Ask-Data result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
