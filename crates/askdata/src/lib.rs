//! Ask-Data (问数): business questions to SQL, numbers and charts.
//!
//! Built so far: the demo database ([`demo`]) and the SQL guard ([`guard`]). To come (issue 5):
//! the schema catalogue, constrained generation, execution on a read-only connection with a time
//! limit, charts, the evaluation set and `shovel demo askdata`.
#![warn(missing_docs)]

pub mod demo;
pub mod guard;

/// Ask-Data errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file would be overwritten.
    #[error("{0} already exists; choose a new path")]
    Exists(std::path::PathBuf),
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// File I/O.
    #[error("{0}: {1}")]
    Io(std::path::PathBuf, std::io::Error),
}

/// Ask-Data result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
