//! Versioned schema migrations, applied in order inside one transaction each. A migration is
//! never edited once released: changes go in a new one.

use sqlx::SqlitePool;

/// (version, SQL). Append only.
const MIGRATIONS: &[(i64, &str)] = &[
    (
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
    ),
    (
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
    ),
    (
        3,
        // A fine-tuned model is an adapter directory over a base model.
        "ALTER TABLE models ADD COLUMN base_id TEXT",
    ),
    (
        4,
        // The durable job queue: a worker takes a job by writing its lease (owner, expiry) and keeps
        // it by renewing; a job whose lease lapsed (its worker died) is taken again and resumes from
        // its last checkpoint.
        "CREATE TABLE fine_tuning_jobs (
        tenant_id        TEXT NOT NULL,
        id               TEXT NOT NULL PRIMARY KEY,
        model            TEXT NOT NULL,
        training_file    TEXT NOT NULL,
        validation_file  TEXT,
        suffix           TEXT,
        seed             INTEGER NOT NULL,
        spec             TEXT NOT NULL,
        status           TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER,
        fine_tuned_model TEXT,
        trained_tokens   INTEGER,
        error            TEXT,
        lease_owner      TEXT,
        lease_until      INTEGER
    )",
    ),
    (
        5,
        "CREATE TABLE fine_tuning_events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id     TEXT NOT NULL,
        id         TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        level      TEXT NOT NULL,
        message    TEXT NOT NULL,
        data       TEXT
    )",
    ),
    (
        6,
        "CREATE TABLE fine_tuning_checkpoints (
        job_id     TEXT NOT NULL,
        id         TEXT NOT NULL,
        step       INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        metrics    TEXT NOT NULL,
        path       TEXT NOT NULL,
        PRIMARY KEY (job_id, step)
    )",
    ),
];

/// Brings the schema up to date.
pub async fn run(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)").execute(pool).await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations").fetch_one(pool).await?;
    for &(version, sql) in MIGRATIONS {
        if current.is_some_and(|c| c >= version) {
            continue;
        }
        let mut tx = pool.begin().await?;
        sqlx::query(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%s','now'))").bind(version).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(())
}
