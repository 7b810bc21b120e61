//! Fine-tuning jobs: rows, events and checkpoints, and the durable queue workers lease from.
//!
//! Leasing: a worker takes the oldest job that is waiting (or running with a lapsed lease, i.e.
//! its worker died) by writing its own id and an expiry in one `UPDATE ... RETURNING`, so two
//! workers never hold the same job. While it trains it renews the lease; if renewing fails (the
//! job was cancelled or taken over) it stops.

use crate::{Error, Result, Store};
use serde::{Deserialize, Serialize};
use shovel_core::{JobEvent, TenantId};
use sqlx::Row;

/// A job's state, with OpenAI's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Files are being checked.
    ValidatingFiles,
    /// Waiting for a worker.
    Queued,
    /// A worker is training it.
    Running,
    /// Done; the model is registered.
    Succeeded,
    /// Stopped by an error.
    Failed,
    /// Stopped by request.
    Cancelled,
}

impl JobStatus {
    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::ValidatingFiles => "validating_files",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "validating_files" => JobStatus::ValidatingFiles,
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return Err(Error::Corrupt { table: "fine_tuning_jobs", reason: format!("unknown status `{s}`") }),
        })
    }
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// A fine-tuning job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Owner.
    pub tenant: TenantId,
    /// `ftjob-...`.
    pub id: String,
    /// Base model id.
    pub model: String,
    /// Training file id.
    pub training_file: String,
    /// Validation file id.
    pub validation_file: Option<String>,
    /// Suffix for the new model's id.
    pub suffix: Option<String>,
    /// Seed.
    pub seed: i64,
    /// Resolved hyperparameters and LoRA settings, as the trainer reads them.
    pub spec: serde_json::Value,
    /// State.
    pub status: JobStatus,
    /// Unix seconds.
    pub created_at: i64,
    /// When a worker first started it.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// The model id it produced.
    pub fine_tuned_model: Option<String>,
    /// Tokens trained on.
    pub trained_tokens: Option<i64>,
    /// `{code, message, param}` when it failed.
    pub error: Option<serde_json::Value>,
}

/// A saved checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// `ftckpt-...`.
    pub id: String,
    /// Optimizer step it was taken at.
    pub step: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Loss figures at that step.
    pub metrics: serde_json::Value,
    /// Directory holding it.
    pub path: String,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn json(r: &sqlx::sqlite::SqliteRow, col: &str) -> Result<Option<serde_json::Value>> {
    let s: Option<String> = r.try_get(col)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| Error::Corrupt { table: "fine_tuning_jobs", reason: format!("{col}: {e}") })).transpose()
}

fn row_to_job(r: &sqlx::sqlite::SqliteRow) -> Result<JobRecord> {
    Ok(JobRecord {
        tenant: TenantId(r.try_get("tenant_id")?),
        id: r.try_get("id")?,
        model: r.try_get("model")?,
        training_file: r.try_get("training_file")?,
        validation_file: r.try_get("validation_file")?,
        suffix: r.try_get("suffix")?,
        seed: r.try_get("seed")?,
        spec: json(r, "spec")?.unwrap_or_default(),
        status: JobStatus::parse(&r.try_get::<String, _>("status")?)?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        fine_tuned_model: r.try_get("fine_tuned_model")?,
        trained_tokens: r.try_get("trained_tokens")?,
        error: json(r, "error")?,
    })
}

/// A short random id with OpenAI's prefix style.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..24])
}

impl Store {
    /// Inserts a new job.
    pub async fn create_job(&self, j: &JobRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO fine_tuning_jobs (tenant_id, id, model, training_file, validation_file, suffix, seed, spec, status, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&j.tenant.0)
        .bind(&j.id)
        .bind(&j.model)
        .bind(&j.training_file)
        .bind(&j.validation_file)
        .bind(&j.suffix)
        .bind(j.seed)
        .bind(j.spec.to_string())
        .bind(j.status.as_str())
        .bind(j.created_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One job of a tenant.
    pub async fn get_job(&self, tenant: &TenantId, id: &str) -> Result<Option<JobRecord>> {
        let r = sqlx::query("SELECT * FROM fine_tuning_jobs WHERE tenant_id = ? AND id = ?").bind(&tenant.0).bind(id).fetch_optional(self.pool()).await?;
        r.as_ref().map(row_to_job).transpose()
    }

    /// A tenant's jobs, newest first, after the job `after` (for paging), at most `limit`.
    pub async fn list_jobs(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM fine_tuning_jobs WHERE tenant_id = ?1
               AND (?2 IS NULL OR rowid < (SELECT rowid FROM fine_tuning_jobs WHERE id = ?2))
             ORDER BY rowid DESC LIMIT ?3",
        )
        .bind(&tenant.0)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row_to_job).collect()
    }

    /// Takes the oldest job that needs a worker (queued, or running with a lapsed lease) for
    /// `owner` for `ttl_s` seconds, and marks it running.
    pub async fn lease_job(&self, owner: &str, ttl_s: i64) -> Result<Option<JobRecord>> {
        let t = now();
        let r = sqlx::query(
            "UPDATE fine_tuning_jobs SET lease_owner = ?1, lease_until = ?2, status = 'running',
                 started_at = COALESCE(started_at, ?3)
             WHERE id = (SELECT id FROM fine_tuning_jobs
                         WHERE status IN ('queued', 'running') AND (lease_until IS NULL OR lease_until < ?3)
                         ORDER BY created_at, rowid LIMIT 1)
             RETURNING *",
        )
        .bind(owner)
        .bind(t + ttl_s)
        .bind(t)
        .fetch_optional(self.pool())
        .await?;
        r.as_ref().map(row_to_job).transpose()
    }

    /// Takes one given job for `owner`, if it needs a worker (as [`Store::lease_job`]).
    pub async fn lease_job_by_id(&self, id: &str, owner: &str, ttl_s: i64) -> Result<Option<JobRecord>> {
        let t = now();
        let r = sqlx::query(
            "UPDATE fine_tuning_jobs SET lease_owner = ?1, lease_until = ?2, status = 'running',
                 started_at = COALESCE(started_at, ?3)
             WHERE id = ?4 AND status IN ('queued', 'running') AND (lease_until IS NULL OR lease_until < ?3)
             RETURNING *",
        )
        .bind(owner)
        .bind(t + ttl_s)
        .bind(t)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        r.as_ref().map(row_to_job).transpose()
    }

    /// Extends `owner`'s lease on a running job. `false` when the lease is no longer its own or
    /// the job is no longer running (cancelled): the worker must stop.
    pub async fn renew_lease(&self, id: &str, owner: &str, ttl_s: i64) -> Result<bool> {
        let r =
            sqlx::query("UPDATE fine_tuning_jobs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND status = 'running'").bind(now() + ttl_s).bind(id).bind(owner).execute(self.pool()).await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ends a job that `owner` holds: succeeded (with the model it made) or failed (with the
    /// error). Does nothing if the job was cancelled meanwhile; returns whether it was applied.
    pub async fn finish_job(&self, id: &str, owner: &str, status: JobStatus, fine_tuned_model: Option<&str>, trained_tokens: Option<i64>, error: Option<&serde_json::Value>) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE fine_tuning_jobs SET status = ?, finished_at = ?, fine_tuned_model = ?, trained_tokens = ?, error = ?,
                 lease_owner = NULL, lease_until = NULL
             WHERE id = ? AND lease_owner = ? AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(now())
        .bind(fine_tuned_model)
        .bind(trained_tokens)
        .bind(error.map(|e| e.to_string()))
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Cancels a job that has not ended. Returns the job as it now stands (`None`: no such job).
    pub async fn cancel_job(&self, tenant: &TenantId, id: &str) -> Result<Option<JobRecord>> {
        sqlx::query(
            "UPDATE fine_tuning_jobs SET status = 'cancelled', finished_at = ?, lease_owner = NULL, lease_until = NULL
             WHERE tenant_id = ? AND id = ? AND status IN ('validating_files', 'queued', 'running')",
        )
        .bind(now())
        .bind(&tenant.0)
        .bind(id)
        .execute(self.pool())
        .await?;
        self.get_job(tenant, id).await
    }

    /// Appends an event to a job's log.
    pub async fn add_event(&self, job_id: &str, level: &str, message: &str, data: Option<&serde_json::Value>) -> Result<()> {
        sqlx::query("INSERT INTO fine_tuning_events (job_id, id, created_at, level, message, data) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(job_id)
            .bind(new_id("ftevent"))
            .bind(now())
            .bind(level)
            .bind(message)
            .bind(data.map(|d| d.to_string()))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A job's events, newest first, after the event `after`, at most `limit`.
    pub async fn list_events(&self, job_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT * FROM fine_tuning_events WHERE job_id = ?1
               AND (?2 IS NULL OR seq < (SELECT seq FROM fine_tuning_events WHERE id = ?2))
             ORDER BY seq DESC LIMIT ?3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(JobEvent { id: r.try_get("id")?, created_at: r.try_get("created_at")?, level: r.try_get("level")?, message: r.try_get("message")?, data: json(r, "data")? })).collect()
    }

    /// Records a checkpoint (replacing one at the same step, as a resumed run rewrites it).
    pub async fn add_checkpoint(&self, job_id: &str, step: i64, metrics: &serde_json::Value, path: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO fine_tuning_checkpoints (job_id, id, step, created_at, metrics, path) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (job_id, step) DO UPDATE SET created_at = excluded.created_at, metrics = excluded.metrics, path = excluded.path",
        )
        .bind(job_id)
        .bind(new_id("ftckpt"))
        .bind(step)
        .bind(now())
        .bind(metrics.to_string())
        .bind(path)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A job's checkpoints, newest first.
    pub async fn list_checkpoints(&self, job_id: &str) -> Result<Vec<CheckpointRecord>> {
        let rows = sqlx::query("SELECT * FROM fine_tuning_checkpoints WHERE job_id = ? ORDER BY step DESC").bind(job_id).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(CheckpointRecord {
                    id: r.try_get("id")?,
                    step: r.try_get("step")?,
                    created_at: r.try_get("created_at")?,
                    metrics: json(r, "metrics")?.unwrap_or_default(),
                    path: r.try_get("path")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, created: i64) -> JobRecord {
        JobRecord {
            tenant: TenantId("t".into()),
            id: id.into(),
            model: "m".into(),
            training_file: "file-1".into(),
            validation_file: None,
            suffix: None,
            seed: 1,
            spec: serde_json::json!({"n_epochs": 1}),
            status: JobStatus::Queued,
            created_at: created,
            started_at: None,
            finished_at: None,
            fine_tuned_model: None,
            trained_tokens: None,
            error: None,
        }
    }

    #[tokio::test]
    async fn lease_is_exclusive_and_lapsed_leases_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).await.unwrap();
        s.create_job(&job("ftjob-a", 1)).await.unwrap();
        s.create_job(&job("ftjob-b", 2)).await.unwrap();
        let a = s.lease_job("w1", 60).await.unwrap().unwrap();
        assert_eq!((a.id.as_str(), a.status), ("ftjob-a", JobStatus::Running));
        let b = s.lease_job("w2", 60).await.unwrap().unwrap();
        assert_eq!(b.id, "ftjob-b");
        assert!(s.lease_job("w3", 60).await.unwrap().is_none());
        assert!(s.renew_lease("ftjob-a", "w1", 60).await.unwrap());
        assert!(!s.renew_lease("ftjob-a", "w2", 60).await.unwrap());
        // A lease that lapsed (negative ttl stands in for a dead worker) is taken over.
        assert!(s.renew_lease("ftjob-b", "w2", -10).await.unwrap());
        let again = s.lease_job("w3", 60).await.unwrap().unwrap();
        assert_eq!(again.id, "ftjob-b");
        assert!(!s.renew_lease("ftjob-b", "w2", 60).await.unwrap());
        // Cancel: the holder's renewal and finish both fail.
        let c = s.cancel_job(&TenantId("t".into()), "ftjob-a").await.unwrap().unwrap();
        assert_eq!(c.status, JobStatus::Cancelled);
        assert!(!s.renew_lease("ftjob-a", "w1", 60).await.unwrap());
        assert!(!s.finish_job("ftjob-a", "w1", JobStatus::Succeeded, Some("x"), None, None).await.unwrap());
        assert!(s.finish_job("ftjob-b", "w3", JobStatus::Succeeded, Some("ft:m:x:b"), Some(10), None).await.unwrap());
        let b = s.get_job(&TenantId("t".into()), "ftjob-b").await.unwrap().unwrap();
        assert_eq!((b.status, b.fine_tuned_model.as_deref(), b.trained_tokens), (JobStatus::Succeeded, Some("ft:m:x:b"), Some(10)));
        // Other tenants see nothing.
        assert!(s.get_job(&TenantId("u".into()), "ftjob-b").await.unwrap().is_none());
        let list = s.list_jobs(&TenantId("t".into()), None, 10).await.unwrap();
        assert_eq!(list.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), vec!["ftjob-b", "ftjob-a"]);
        let page = s.list_jobs(&TenantId("t".into()), Some("ftjob-b"), 10).await.unwrap();
        assert_eq!(page.len(), 1);
    }

    #[tokio::test]
    async fn events_page_newest_first_and_checkpoints_replace_by_step() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).await.unwrap();
        for i in 0..5 {
            s.add_event("j", "info", &format!("e{i}"), Some(&serde_json::json!({"step": i}))).await.unwrap();
        }
        let ev = s.list_events("j", None, 2).await.unwrap();
        assert_eq!(ev.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), vec!["e4", "e3"]);
        let more = s.list_events("j", Some(&ev[1].id), 10).await.unwrap();
        assert_eq!(more.len(), 3);
        s.add_checkpoint("j", 10, &serde_json::json!({"loss": 1.0}), "/a").await.unwrap();
        s.add_checkpoint("j", 10, &serde_json::json!({"loss": 0.5}), "/b").await.unwrap();
        s.add_checkpoint("j", 20, &serde_json::json!({"loss": 0.2}), "/c").await.unwrap();
        let c = s.list_checkpoints("j").await.unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].step, c[1].path.as_str()), (20, "/b"));
    }
}
