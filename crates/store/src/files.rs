//! The Files API's storage: metadata rows in the store, content as blobs under
//! `$SHOVEL_HOME/files/<tenant>/<id>`. A blob is written to a temporary name, synced and renamed
//! before its row is inserted, so no half-written file is ever visible; a crash in between leaves
//! only an unreferenced blob.

use crate::Store;
use sha2::{Digest, Sha256};
use shovel_core::{FileError, FileObject, FileStore, Purpose, TenantId};
use sqlx::Row;
use std::io::Write;
use std::path::PathBuf;

/// Files over a [`Store`] and a local blob directory.
#[derive(Clone)]
pub struct LocalFiles {
    store: Store,
    root: PathBuf,
}

impl LocalFiles {
    /// Files whose blobs live under `root`.
    pub fn new(store: Store, root: PathBuf) -> Self {
        LocalFiles { store, root }
    }

    fn blob(&self, tenant: &TenantId, id: &str) -> PathBuf {
        self.root.join(&tenant.0).join(id)
    }
}

fn internal(e: impl std::fmt::Display) -> FileError {
    tracing::error!(error = %e, "file store");
    FileError::Internal(e.to_string())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn row(r: &sqlx::sqlite::SqliteRow) -> Result<FileObject, FileError> {
    let purpose: String = r.try_get("purpose").map_err(internal)?;
    Ok(FileObject {
        id: r.try_get("id").map_err(internal)?,
        tenant: TenantId(r.try_get("tenant_id").map_err(internal)?),
        purpose: Purpose::parse(&purpose).ok_or_else(|| internal(format!("unknown purpose `{purpose}`")))?,
        filename: r.try_get("filename").map_err(internal)?,
        bytes: r.try_get::<i64, _>("bytes").map_err(internal)? as u64,
        sha256: r.try_get("sha256").map_err(internal)?,
        created_at: r.try_get("created_at").map_err(internal)?,
    })
}

#[async_trait::async_trait]
impl FileStore for LocalFiles {
    async fn create(&self, tenant: &TenantId, purpose: Purpose, filename: &str, data: &[u8]) -> Result<FileObject, FileError> {
        let id = format!("file-{}", uuid::Uuid::new_v4().simple());
        let dir = self.root.join(&tenant.0);
        let path = self.blob(tenant, &id);
        let sha = hex::encode(Sha256::digest(data));
        let data = data.to_vec();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
            tmp.write_all(&data)?;
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let f = FileObject { id, tenant: tenant.clone(), purpose, filename: filename.to_string(), bytes: 0, sha256: sha, created_at: now() };
        let bytes = std::fs::metadata(self.blob(tenant, &f.id)).map_err(internal)?.len();
        let f = FileObject { bytes, ..f };
        sqlx::query("INSERT INTO files (tenant_id, id, purpose, filename, bytes, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(&tenant.0)
            .bind(&f.id)
            .bind(purpose.as_str())
            .bind(&f.filename)
            .bind(f.bytes as i64)
            .bind(&f.sha256)
            .bind(f.created_at)
            .execute(self.store.pool())
            .await
            .map_err(internal)?;
        Ok(f)
    }

    async fn list(&self, tenant: &TenantId, purpose: Option<Purpose>) -> Result<Vec<FileObject>, FileError> {
        let rows = match purpose {
            Some(p) => sqlx::query("SELECT * FROM files WHERE tenant_id = ? AND purpose = ? ORDER BY created_at DESC, id").bind(&tenant.0).bind(p.as_str()).fetch_all(self.store.pool()).await,
            None => sqlx::query("SELECT * FROM files WHERE tenant_id = ? ORDER BY created_at DESC, id").bind(&tenant.0).fetch_all(self.store.pool()).await,
        }
        .map_err(internal)?;
        rows.iter().map(row).collect()
    }

    async fn get(&self, tenant: &TenantId, id: &str) -> Result<FileObject, FileError> {
        let r = sqlx::query("SELECT * FROM files WHERE tenant_id = ? AND id = ?").bind(&tenant.0).bind(id).fetch_optional(self.store.pool()).await.map_err(internal)?;
        r.as_ref().map(row).transpose()?.ok_or_else(|| FileError::NotFound { id: id.to_string() })
    }

    async fn content(&self, tenant: &TenantId, id: &str) -> Result<Vec<u8>, FileError> {
        self.get(tenant, id).await?;
        tokio::fs::read(self.blob(tenant, id)).await.map_err(internal)
    }

    async fn delete(&self, tenant: &TenantId, id: &str) -> Result<(), FileError> {
        let r = sqlx::query("DELETE FROM files WHERE tenant_id = ? AND id = ?").bind(&tenant.0).bind(id).execute(self.store.pool()).await.map_err(internal)?;
        if r.rows_affected() == 0 {
            return Err(FileError::NotFound { id: id.to_string() });
        }
        // The row is gone first: a crash here leaves an unreferenced blob, never a dangling row.
        let _ = tokio::fs::remove_file(self.blob(tenant, id)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_round_trip_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).await.unwrap();
        let files = LocalFiles::new(store, dir.path().join("files"));
        let (a, b) = (TenantId("a".into()), TenantId("b".into()));
        let f = files.create(&a, Purpose::FineTune, "train.jsonl", b"{\"x\":1}\n").await.unwrap();
        assert_eq!(f.bytes, 8);
        assert_eq!(f.sha256, hex::encode(Sha256::digest(b"{\"x\":1}\n")));
        assert_eq!(files.content(&a, &f.id).await.unwrap(), b"{\"x\":1}\n");
        assert_eq!(files.list(&a, Some(Purpose::FineTune)).await.unwrap().len(), 1);
        assert!(files.list(&a, Some(Purpose::Batch)).await.unwrap().is_empty());
        // Another tenant sees nothing of it.
        assert!(files.list(&b, None).await.unwrap().is_empty());
        assert_eq!(files.get(&b, &f.id).await, Err(FileError::NotFound { id: f.id.clone() }));
        assert!(files.delete(&b, &f.id).await.is_err());
        files.delete(&a, &f.id).await.unwrap();
        assert!(files.get(&a, &f.id).await.is_err());
        assert!(!dir.path().join("files/a").join(&f.id).exists());
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("files/a")).unwrap().count(), 0);
    }
}
