//! The fine-tuning jobs API, OpenAI-shaped: create, list, retrieve, events, checkpoints, cancel.
//! Shovel's LoRA settings ride in an extra `lora` block (`r`, `alpha`, `dropout`,
//! `target_modules`, `max_length`), which the OpenAI SDK sends through `extra_body`.

use crate::error::ApiError;
use crate::extract::{ApiJson, PrincipalExt};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shovel_core::{CreateJob, FineTuning, FtError, Job, JobCheckpoint, JobEvent};
use std::sync::Arc;

impl From<FtError> for ApiError {
    fn from(e: FtError) -> Self {
        match e {
            FtError::NotFound { message, param } => ApiError { param, ..ApiError::not_found(message) },
            FtError::Invalid { message, param } => ApiError { param, ..ApiError::invalid("", message) },
            FtError::Internal(m) => {
                tracing::error!(error = %m, "fine-tuning service");
                ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: "The fine-tuning service failed.".into(), kind: "server_error", param: None, code: None, retry_after: None }
            }
        }
    }
}

fn service(st: &AppState) -> Result<&Arc<dyn FineTuning>, ApiError> {
    st.fine_tuning.as_ref().ok_or_else(|| ApiError::not_found("This server has no fine-tuning service configured"))
}

/// `"auto"` or a value.
#[derive(Deserialize)]
#[serde(untagged)]
enum Auto<T> {
    Value(T),
    Text(String),
}

fn auto<T>(v: Option<Auto<T>>, param: &str) -> Result<Option<T>, ApiError> {
    match v {
        None => Ok(None),
        Some(Auto::Value(x)) => Ok(Some(x)),
        Some(Auto::Text(s)) if s == "auto" => Ok(None),
        Some(Auto::Text(s)) => Err(ApiError::invalid(param, format!("`{param}` must be a number or \"auto\", got \"{s}\""))),
    }
}

#[derive(Deserialize, Default)]
struct Hyper {
    n_epochs: Option<Auto<usize>>,
    batch_size: Option<Auto<usize>>,
    learning_rate_multiplier: Option<Auto<f32>>,
}

#[derive(Deserialize)]
struct Supervised {
    hyperparameters: Option<Hyper>,
}

#[derive(Deserialize)]
struct Method {
    #[serde(rename = "type")]
    kind: String,
    supervised: Option<Supervised>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lora {
    r: Option<usize>,
    alpha: Option<f32>,
    dropout: Option<f32>,
    target_modules: Option<Vec<String>>,
    max_length: Option<usize>,
}

/// The create request's body.
#[derive(Deserialize)]
pub struct CreateBody {
    model: String,
    training_file: String,
    validation_file: Option<String>,
    suffix: Option<String>,
    seed: Option<u64>,
    hyperparameters: Option<Hyper>,
    method: Option<Method>,
    lora: Option<Lora>,
}

fn job_json(j: &Job) -> Value {
    let mut hp = j.hyperparameters.clone();
    let lora = hp.as_object_mut().and_then(|o| o.remove("lora"));
    json!({
        "object": "fine_tuning.job",
        "id": j.id,
        "model": j.model,
        "created_at": j.created_at,
        "finished_at": j.finished_at,
        "fine_tuned_model": j.fine_tuned_model,
        "organization_id": "org-shovel",
        "result_files": [],
        "status": j.status,
        "training_file": j.training_file,
        "validation_file": j.validation_file,
        "hyperparameters": hp,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        "lora": lora,
        "trained_tokens": j.trained_tokens,
        "error": j.error,
        "seed": j.seed,
        "user_provided_suffix": j.suffix,
        "estimated_finish": null,
        "integrations": [],
        "metadata": null,
    })
}

fn event_json(e: &JobEvent) -> Value {
    json!({
        "object": "fine_tuning.job.event",
        "id": e.id,
        "created_at": e.created_at,
        "level": e.level,
        "message": e.message,
        "data": e.data,
        "type": if e.data.is_some() { "metrics" } else { "message" },
    })
}

fn checkpoint_json(c: &JobCheckpoint) -> Value {
    json!({
        "object": "fine_tuning.job.checkpoint",
        "id": c.id,
        "created_at": c.created_at,
        "step_number": c.step_number,
        "metrics": c.metrics,
        "fine_tuning_job_id": c.fine_tuning_job_id,
        "fine_tuned_model_checkpoint": c.fine_tuned_model_checkpoint,
    })
}

/// POST /v1/fine_tuning/jobs
pub async fn create(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, ApiJson(b): ApiJson<CreateBody>) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let mut hp = b.hyperparameters.unwrap_or_default();
    if let Some(m) = b.method {
        if m.kind != "supervised" {
            return Err(ApiError::unsupported("method.type", format!("method `{}` is not supported yet (only supervised)", m.kind)));
        }
        if let Some(h) = m.supervised.and_then(|s| s.hyperparameters) {
            hp = h;
        }
    }
    let lora = b.lora.unwrap_or(Lora { r: None, alpha: None, dropout: None, target_modules: None, max_length: None });
    let req = CreateJob {
        model: b.model,
        training_file: b.training_file,
        validation_file: b.validation_file,
        suffix: b.suffix,
        seed: b.seed,
        n_epochs: auto(hp.n_epochs, "hyperparameters.n_epochs")?,
        batch_size: auto(hp.batch_size, "hyperparameters.batch_size")?,
        learning_rate_multiplier: auto(hp.learning_rate_multiplier, "hyperparameters.learning_rate_multiplier")?,
        lora_r: lora.r,
        lora_alpha: lora.alpha,
        lora_dropout: lora.dropout,
        target_modules: lora.target_modules,
        max_length: lora.max_length,
    };
    Ok(Json(job_json(&svc.create(&p.tenant, req).await?)))
}

/// Paging parameters.
#[derive(Deserialize)]
pub struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

fn limit(p: &Page) -> Result<usize, ApiError> {
    match p.limit {
        None => Ok(20),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid("limit", format!("`limit` must be between 1 and 100, got {n}"))),
    }
}

/// GET /v1/fine_tuning/jobs
pub async fn list(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, Query(q): Query<Page>) -> Result<Json<Value>, ApiError> {
    let n = limit(&q)?;
    let mut jobs = service(&st)?.list(&p.tenant, q.after.as_deref(), n + 1).await?;
    let has_more = jobs.len() > n;
    jobs.truncate(n);
    Ok(Json(json!({"object": "list", "data": jobs.iter().map(job_json).collect::<Vec<_>>(), "has_more": has_more})))
}

/// GET /v1/fine_tuning/jobs/{id}
pub async fn get(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&service(&st)?.get(&p.tenant, &id).await?)))
}

/// POST /v1/fine_tuning/jobs/{id}/cancel
pub async fn cancel(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&service(&st)?.cancel(&p.tenant, &id).await?)))
}

/// GET /v1/fine_tuning/jobs/{id}/events
pub async fn events(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, Path(id): Path<String>, Query(q): Query<Page>) -> Result<Json<Value>, ApiError> {
    let n = limit(&q)?;
    let mut ev = service(&st)?.events(&p.tenant, &id, q.after.as_deref(), n + 1).await?;
    let has_more = ev.len() > n;
    ev.truncate(n);
    Ok(Json(json!({"object": "list", "data": ev.iter().map(event_json).collect::<Vec<_>>(), "has_more": has_more})))
}

/// GET /v1/fine_tuning/jobs/{id}/checkpoints
pub async fn checkpoints(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let c = service(&st)?.checkpoints(&p.tenant, &id).await?;
    Ok(Json(json!({
        "object": "list",
        "data": c.iter().map(checkpoint_json).collect::<Vec<_>>(),
        "has_more": false,
        "first_id": c.first().map(|x| x.id.clone()),
        "last_id": c.last().map(|x| x.id.clone()),
    })))
}
