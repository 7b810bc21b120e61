//! Running a guarded query: on a read-only connection, under a time limit, rows capped. The
//! time limit is SQLite's progress handler (checked every few thousand VM instructions), so a
//! runaway query (a cross join of everything, a huge aggregate) is interrupted inside SQLite,
//! not merely abandoned by the caller.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Column, ConnectOptions, Row, SqliteConnection, TypeInfo, ValueRef};
use std::path::Path;
use std::time::{Duration, Instant};

/// A query's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Values: numbers, strings or nulls.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Opens a SQLite file read-only (the file must exist; nothing can be written through it).
pub async fn open_read_only(path: &Path) -> Result<SqliteConnection> {
    if !path.is_file() {
        return Err(Error::Io(path.to_path_buf(), std::io::Error::new(std::io::ErrorKind::NotFound, "no such database file")));
    }
    let mut conn = SqliteConnectOptions::new().filename(path).read_only(true).connect().await?;
    // A second lock besides the read-only open: the connection refuses writes even to temp tables.
    sqlx::query("PRAGMA query_only = 1").execute(&mut conn).await?;
    Ok(conn)
}

/// Runs `sql` (already through the guard) with a deadline.
pub async fn run(conn: &mut SqliteConnection, sql: &str, timeout: Duration) -> Result<Rows> {
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
    Ok(to_rows(&rows))
}

fn to_rows(rows: &[SqliteRow]) -> Rows {
    let columns = rows.first().map(|r| r.columns().iter().map(|c| c.name().to_string()).collect()).unwrap_or_default();
    let rows = rows.iter().map(|r| (0..r.len()).map(|i| value(r, i)).collect()).collect();
    Rows { columns, rows }
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
