//! Connectors: where the data comes from. Every one ends in a read-only connection:
//!
//! - `demo`: the demo database (written on first use to the given cache path), with its English
//!   aliases;
//! - a SQLite file, opened read-only;
//! - CSV files, imported into a new SQLite file beside the cache (one table per file, named
//!   after it; each column typed INTEGER, REAL or TEXT from its values), then opened read-only;
//! - a PostgreSQL URL (`postgres://user:password@host:port/db`): the current schema's tables
//!   and views, through a session whose transactions are read-only (see [`exec`]). A database
//!   holding the demo's tables (`shovel askdata demo-db postgres://...` writes them) gets the
//!   demo's aliases and glossary. The model writes SQLite-flavoured SQL (`substr` on dates
//!   stored as text, `ROUND(x, 2)`): that runs on PostgreSQL where dates are text and amounts
//!   `numeric`, as the demo's are; on other column types such a query fails with the
//!   database's message.

use crate::ask::Database;
use crate::catalog::{quote, Catalog};
use crate::{demo, exec, Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection};
use std::path::{Path, PathBuf};

/// Where a database comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The demo database.
    Demo,
    /// A SQLite file.
    Sqlite(PathBuf),
    /// CSV files, one table each.
    Csv(Vec<PathBuf>),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl Source {
    /// Parses `--db`: `demo`, `postgres://...`, `a.csv[,b.csv...]`, or a SQLite path.
    pub fn parse(s: &str) -> Source {
        if s == "demo" {
            Source::Demo
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Source::Postgres(s.to_string())
        } else if s.split(',').all(|p| p.to_lowercase().ends_with(".csv")) {
            Source::Csv(s.split(',').map(PathBuf::from).collect())
        } else {
            Source::Sqlite(PathBuf::from(s))
        }
    }

    /// Where [`Source::Demo`] keeps the demo database under `cache`.
    pub fn demo_path(cache: &Path) -> PathBuf {
        cache.join("demo.db")
    }

    /// Opens the source read-only. `cache` is a directory for the demo database and CSV imports.
    pub async fn open(&self, cache: &Path) -> Result<Database> {
        let (mut conn, label) = match self {
            Source::Demo => {
                let p = Source::demo_path(cache);
                if !p.exists() {
                    std::fs::create_dir_all(cache).map_err(|e| Error::Io(cache.to_path_buf(), e))?;
                    demo::write_demo_db(&p).await?;
                }
                (exec::open_read_only(&p).await?, p.display().to_string())
            }
            Source::Sqlite(p) => (exec::open_read_only(p).await?, p.display().to_string()),
            Source::Csv(files) => {
                let p = import_csv(files, cache).await?;
                (exec::open_read_only(&p).await?, p.display().to_string())
            }
            Source::Postgres(url) => (exec::open_postgres(url).await?, format!("{} (its current schema)", redact(url))),
        };
        let mut catalog = Catalog::read(&mut conn).await?;
        if catalog.tables.is_empty() {
            return Err(Error::Unsupported(format!("{label} has no tables")));
        }
        // The demo's English aliases and glossary: for the demo, and for its copy in PostgreSQL.
        if matches!(self, Source::Demo) || (matches!(self, Source::Postgres(_)) && demo::is_demo(&catalog)) {
            catalog.aliases = demo::aliases();
            catalog.terms.extend(demo::terms());
            catalog.measures = demo::measures();
        }
        Ok(Database { conn, catalog })
    }
}

/// A database argument with any URL password hidden, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s && url[s + 3..at].contains(':') => {
            let cred = &url[s + 3..at];
            let user = cred.split(':').next().unwrap_or("");
            format!("{}://{user}:***{}", &url[..s], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A table name from a file name: letters, digits and underscores, not starting with a digit.
fn table_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
    let mut n: String = stem.chars().map(|c| if c.is_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if n.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        n.insert(0, 't');
    }
    n
}

/// The narrowest type every non-empty value fits: INTEGER, REAL or TEXT.
fn column_type(values: impl Iterator<Item = String>) -> &'static str {
    let mut ty = "INTEGER";
    for v in values {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        if ty == "INTEGER" && v.parse::<i64>().is_err() {
            ty = "REAL";
        }
        if ty == "REAL" && v.parse::<f64>().map_or(true, |f| !f.is_finite()) {
            return "TEXT";
        }
    }
    ty
}

/// Imports CSV files (header row first) into a new SQLite file in `cache`, named after the
/// files' content hash so the same files are imported once. Returns its path.
pub async fn import_csv(files: &[PathBuf], cache: &Path) -> Result<PathBuf> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut tables = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::Io(f.clone(), e))?;
        hasher.update(f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
        hasher.update(&bytes);
        let mut rdr = csv::ReaderBuilder::new().flexible(false).from_reader(bytes.as_slice());
        let header: Vec<String> = rdr.headers().map_err(|e| Error::Csv(f.clone(), e.to_string()))?.iter().map(|h| h.trim().to_string()).collect();
        if header.is_empty() || header.iter().any(|h| h.is_empty()) {
            return Err(Error::Csv(f.clone(), "the first row must name every column".into()));
        }
        let mut rows = Vec::new();
        for (i, r) in rdr.records().enumerate() {
            let r = r.map_err(|e| Error::Csv(f.clone(), format!("row {}: {e}", i + 2)))?;
            rows.push(r.iter().map(|v| v.to_string()).collect::<Vec<String>>());
        }
        let types: Vec<&str> = (0..header.len()).map(|c| column_type(rows.iter().map(|r| r[c].clone()))).collect();
        tables.push((table_name(f), header, types, rows));
    }
    let names: Vec<&String> = tables.iter().map(|t| &t.0).collect();
    if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)) {
        return Err(Error::Unsupported(format!("two CSV files make the same table name `{}`", dup.1)));
    }
    let digest: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(cache).map_err(|e| Error::Io(cache.to_path_buf(), e))?;
    let out = cache.join(format!("csv-{digest}.db"));
    if out.exists() {
        return Ok(out);
    }
    let tmp = out.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let mut conn = SqliteConnectOptions::new().filename(&tmp).create_if_missing(true).journal_mode(SqliteJournalMode::Delete).connect().await?;
    let mut tx = conn.begin().await?;
    for (name, header, types, rows) in &tables {
        let cols: Vec<String> = header.iter().zip(types).map(|(h, t)| format!("{} {t}", quote(h))).collect();
        sqlx::query(&format!("CREATE TABLE {} ({})", quote(name), cols.join(", "))).execute(&mut *tx).await?;
        let marks = vec!["?"; header.len()].join(", ");
        let insert = format!("INSERT INTO {} VALUES ({marks})", quote(name));
        for r in rows {
            let mut q = sqlx::query(&insert);
            for (v, t) in r.iter().zip(types) {
                let v = v.trim();
                q = match (*t, v.is_empty()) {
                    (_, true) => q.bind(None::<String>),
                    ("INTEGER", _) => q.bind(v.parse::<i64>().unwrap_or_default()),
                    ("REAL", _) => q.bind(v.parse::<f64>().unwrap_or_default()),
                    _ => q.bind(v.to_string()),
                };
            }
            q.execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    conn.close().await?;
    std::fs::rename(&tmp, &out).map_err(|e| Error::Io(out.clone(), e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_arguments_parse() {
        assert_eq!(Source::parse("demo"), Source::Demo);
        assert_eq!(Source::parse("a.csv,B.CSV"), Source::Csv(vec!["a.csv".into(), "B.CSV".into()]));
        assert_eq!(Source::parse("shop.db"), Source::Sqlite("shop.db".into()));
        assert!(matches!(Source::parse("postgres://u:pw@h/db"), Source::Postgres(_)));
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h:5432/db"), "postgres://u@h:5432/db");
    }

    #[tokio::test]
    async fn csv_files_become_typed_tables_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("2023 orders.csv");
        std::fs::write(&f, "city,units,price,note\n北京,3,9.5,a\n上海,,12,\n深圳,7,1e2,c\n").unwrap();
        let db = Source::Csv(vec![f.clone()]).open(&dir.path().join("cache")).await.unwrap();
        let t = &db.catalog.tables[0];
        assert_eq!(t.name, "t2023_orders");
        let types: Vec<(&str, &str)> = t.columns.iter().map(|c| (c.name.as_str(), c.ty.as_str())).collect();
        assert_eq!(types, vec![("city", "TEXT"), ("units", "INTEGER"), ("price", "REAL"), ("note", "TEXT")]);
        assert_eq!(t.columns[0].values, vec!["上海", "北京", "深圳"]);
        let mut conn = db.conn;
        let r = exec::run(&mut conn, "SELECT SUM(units) AS u, SUM(price) AS p FROM t2023_orders", std::time::Duration::from_secs(1)).await.unwrap();
        assert_eq!(r.rows[0], vec![serde_json::json!(10), serde_json::json!(121.5)]);
        assert!(exec::run(&mut conn, "DELETE FROM t2023_orders", std::time::Duration::from_secs(1)).await.is_err());
        // The same file imports once.
        let again = import_csv(&[f.clone()], &dir.path().join("cache")).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("cache")).unwrap().count(), 1, "{again:?}");
        // Ragged rows are refused with the row number.
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "a,b\n1,2\n3\n").unwrap();
        let e = import_csv(&[bad], &dir.path().join("cache")).await.unwrap_err().to_string();
        assert!(e.contains("bad.csv") && e.contains("row 3"), "{e}");
        let e = Source::parse("postgres://u:pw@127.0.0.1:1/db").open(dir.path()).await.err().unwrap().to_string();
        assert!(e.contains("cannot connect to postgres://u:***@127.0.0.1:1/db") && !e.contains("pw"), "{e}");
    }
}
