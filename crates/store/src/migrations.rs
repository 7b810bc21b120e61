//! Versioned schema migrations, applied in order inside one transaction each. A migration is
//! never edited once released: changes go in a new one.

use sqlx::SqlitePool;

/// (version, SQL). Append only.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE models (
        tenant_id  TEXT NOT NULL,
        id         TEXT NOT NULL,
        kind       TEXT NOT NULL,
        format     TEXT NOT NULL,
        path       TEXT NOT NULL,
        sha256     TEXT,
        size_bytes INTEGER NOT NULL,
        source     TEXT NOT NULL,
        owned_by   TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, id)
    )",
), (
    2,
    "CREATE TABLE files (
        tenant_id  TEXT NOT NULL,
        id         TEXT NOT NULL,
        purpose    TEXT NOT NULL,
        filename   TEXT NOT NULL,
        bytes      INTEGER NOT NULL,
        sha256     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, id)
    )",
)];

/// Brings the schema up to date.
pub async fn run(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .execute(pool)
        .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations").fetch_one(pool).await?;
    for &(version, sql) in MIGRATIONS {
        if current.is_some_and(|c| c >= version) {
            continue;
        }
        let mut tx = pool.begin().await?;
        sqlx::query(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%s','now'))")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}
