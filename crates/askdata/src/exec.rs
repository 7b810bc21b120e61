//! Running a guarded query: on a read-only connection, under a time limit, rows capped. The
//! database stops a runaway query (a cross join of everything, a huge aggregate) itself, not
//! merely abandoned by the caller: SQLite through its progress handler (checked every few
//! thousand VM instructions), PostgreSQL through `statement_timeout`. A PostgreSQL query runs
//! in a read-only transaction that is rolled back, on a session whose transactions default to
//! read-only.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Column, ConnectOptions, Executor, Row, SqliteConnection, TypeInfo, ValueRef};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A read-only connection to the database Ask-Data answers from.
pub enum Conn {
    /// A SQLite file (the demo, a file, imported CSV).
    Sqlite(SqliteConnection),
    /// A PostgreSQL database.
    Postgres(PgConnection),
}

/// The SQL dialect a connection speaks (the guard parses with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Conn {
    /// The connection's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Connects to PostgreSQL read-only: every transaction of the session defaults to read-only,
/// and [`run`] opens its own read-only one besides.
pub async fn open_postgres(url: &str) -> Result<Conn> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| Error::Unsupported(format!("{}: {e}", crate::source::redact(url))))?;
    let opts = opts.options([("default_transaction_read_only", "on")]).application_name("shovel-askdata");
    let conn = opts.connect().await.map_err(|e| Error::Query(format!("cannot connect to {}: {e}", crate::source::redact(url))))?;
    Ok(Conn::Postgres(conn))
}

/// A query's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Values: numbers, strings or nulls.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Opens a SQLite file read-only (the file must exist; nothing can be written through it).
pub async fn open_read_only(path: &Path) -> Result<Conn> {
    if !path.is_file() {
        return Err(Error::Io(path.to_path_buf(), std::io::Error::new(std::io::ErrorKind::NotFound, "no such database file")));
    }
    let mut conn = SqliteConnectOptions::new().filename(path).read_only(true).connect().await?;
    // A second lock besides the read-only open: the connection refuses writes even to temp tables.
    sqlx::query("PRAGMA query_only = 1").execute(&mut conn).await?;
    // The file's pages are in the OS page cache already; SQLite's own cache (2 MB by default)
    // would keep a second copy of what reading the catalogue scanned for as long as the server
    // runs (heaptrack: 2.0 MB of the server's peak). 256 KiB serves the B-tree's upper pages.
    sqlx::query("PRAGMA cache_size = -256").execute(&mut conn).await?;
    Ok(Conn::Sqlite(conn))
}

/// Runs `sql` (already through the guard) with a deadline.
pub async fn run(conn: &mut Conn, sql: &str, timeout: Duration) -> Result<Rows> {
    match conn {
        Conn::Sqlite(c) => run_sqlite(c, sql, timeout).await,
        Conn::Postgres(c) => run_postgres(c, sql, timeout).await,
    }
}

async fn run_postgres(conn: &mut PgConnection, sql: &str, timeout: Duration) -> Result<Rows> {
    // The simple query protocol below would run several statements (`SET ...; COMMIT; DELETE`
    // could leave the read-only transaction); the guard lets one query through, and so does this.
    use sqlparser::{ast::Statement, dialect::PostgreSqlDialect, parser::Parser};
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) if s.len() == 1 && matches!(s[0], Statement::Query(_)) => {}
        _ => return Err(Error::Query("only one SELECT or WITH query runs on PostgreSQL".into())),
    }
    (&mut *conn).execute("BEGIN READ ONLY").await?;
    let limit = format!("SET LOCAL statement_timeout = {}", timeout.as_millis().max(1));
    (&mut *conn).execute(limit.as_str()).await?;
    // A query without arguments goes by the simple query protocol: every value arrives as
    // text, whatever its type (numeric included, which sqlx decodes only through a decimal
    // crate).
    let out = (&mut *conn).fetch_all(sql).await;
    (&mut *conn).execute("ROLLBACK").await?;
    match out {
        Ok(rows) => Ok(to_rows(&rows, pg_value)),
        // 57014: query_canceled, what statement_timeout raises.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014") => Err(Error::Timeout(timeout)),
        Err(e) => Err(Error::Query(e.to_string())),
    }
}

/// Column names and every value as JSON, for either database's rows.
fn to_rows<R: Row>(rows: &[R], value: fn(&R, usize) -> serde_json::Value) -> Rows {
    let columns = rows.first().map(|r| r.columns().iter().map(|c| c.name().to_string()).collect()).unwrap_or_default();
    let rows = rows.iter().map(|r| (0..r.len()).map(|i| value(r, i)).collect()).collect();
    Rows { columns, rows }
}

fn pg_value(r: &PgRow, i: usize) -> serde_json::Value {
    let Ok(raw) = r.try_get_raw(i) else { return serde_json::Value::Null };
    if raw.is_null() {
        return serde_json::Value::Null;
    }
    let ty = raw.type_info().name().to_string();
    let Ok(text) = raw.as_str() else { return serde_json::Value::Null };
    match ty.as_str() {
        "INT2" | "INT4" | "INT8" | "NUMERIC" | "FLOAT4" | "FLOAT8" | "OID" => {
            if let Ok(n) = text.parse::<i64>() {
                return n.into();
            }
            text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(serde_json::Value::Number).unwrap_or_else(|| serde_json::Value::String(text.to_string()))
        }
        "BOOL" => serde_json::Value::Bool(text == "t"),
        "BYTEA" => serde_json::Value::String(format!("<{} bytes>", text.len().saturating_sub(2) / 2)),
        _ => serde_json::Value::String(text.to_string()),
    }
}

async fn run_sqlite(conn: &mut SqliteConnection, sql: &str, timeout: Duration) -> Result<Rows> {
    let deadline = Instant::now() + timeout;
    {
        let mut h = conn.lock_handle().await?;
        // sqlx's convention: returning false interrupts the statement (SQLITE_INTERRUPT).
        h.set_progress_handler(10_000, move || Instant::now() <= deadline);
    }
    let out = sqlx::query(sql).fetch_all(&mut *conn).await;
    {
        let mut h = conn.lock_handle().await?;
        h.remove_progress_handler();
    }
    let rows = match out {
        Ok(r) => r,
        Err(e) if Instant::now() > deadline || e.to_string().contains("interrupted") => return Err(Error::Timeout(timeout)),
        Err(e) => return Err(Error::Query(e.to_string())),
    };
    Ok(to_rows(&rows, value))
}

fn value(r: &SqliteRow, i: usize) -> serde_json::Value {
    let Ok(raw) = r.try_get_raw(i) else { return serde_json::Value::Null };
    if raw.is_null() {
        return serde_json::Value::Null;
    }
    match raw.type_info().name() {
        "INTEGER" => r.try_get::<i64, _>(i).map(Into::into).unwrap_or(serde_json::Value::Null),
        "REAL" | "NUMERIC" => r.try_get::<f64, _>(i).ok().and_then(|f| serde_json::Number::from_f64(f)).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null),
        "BLOB" => serde_json::Value::String(format!("<{} bytes>", r.try_get::<Vec<u8>, _>(i).map(|b| b.len()).unwrap_or(0))),
        _ => r.try_get::<String, _>(i).map(serde_json::Value::String).unwrap_or(serde_json::Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queries_run_read_only_and_runaway_ones_stop_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.db");
        crate::demo::write_demo_db(&path).await.unwrap();
        let mut c = open_read_only(&path).await.unwrap();
        let r = run(&mut c, "SELECT region, COUNT(*) AS n, ROUND(SUM(amount), 2) AS amount FROM sales GROUP BY region ORDER BY region", Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.columns, vec!["region", "n", "amount"]);
        assert_eq!(r.rows.len(), 7);
        assert!(r.rows[0][1].is_i64() && r.rows[0][2].is_f64() && r.rows[0][0].is_string());
        let t = Instant::now();
        let e = run(&mut c, "SELECT COUNT(*) FROM sales a, sales b, sales c", Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // The connection is usable afterwards, and cannot write even if the guard were bypassed.
        assert!(run(&mut c, "SELECT 1", Duration::from_secs(1)).await.is_ok());
        let e = run(&mut c, "DELETE FROM sales", Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, Error::Query(_)), "{e}");
        let e = run(&mut c, "CREATE TEMP TABLE x(a)", Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, Error::Query(_)), "{e}");
        assert!(open_read_only(&dir.path().join("missing.db")).await.is_err());
    }
}
