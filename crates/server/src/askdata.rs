//! Ask-Data over HTTP: `POST /api/askdata/ask` answers a question on the server's configured
//! database; `POST /api/askdata/feedback` turns a verdict on an answer into a training example.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use shovel_askdata::ask::AskError;
use shovel_askdata::service::{AskData, Feedback, FeedbackError};
use shovel_core::ModelId;
use std::sync::Arc;

impl From<AskError> for ApiError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Backend(b) => b.into(),
        }
    }
}

impl From<FeedbackError> for ApiError {
    fn from(e: FeedbackError) -> Self {
        ApiError::invalid(e.param, e.message)
    }
}

fn service(st: &AppState) -> Result<&Arc<AskData>, ApiError> {
    st.askdata.as_ref().ok_or_else(|| ApiError::not_found("This server has no Ask-Data database configured"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AskRequest {
    question: String,
    #[serde(default)]
    model: Option<String>,
    /// Also return the chart drawn as SVG.
    #[serde(default)]
    svg: bool,
}

/// `POST /api/askdata/ask`: `{question, model?, svg?}` -> `{question, sql, chart, columns, rows,
/// answer, error?, echarts, svg?}`. A question the database cannot answer is still a 200, with
/// `error` saying why and `answer` saying so to the user.
pub(crate) async fn ask(State(st): State<AppState>, ApiJson(req): ApiJson<AskRequest>) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    if req.question.trim().is_empty() {
        return Err(ApiError::invalid("question", "`question` must not be empty"));
    }
    if req.question.chars().count() > 2000 {
        return Err(ApiError::invalid("question", "`question` is longer than 2000 characters"));
    }
    let answer = svc.ask(st.backend.as_ref(), req.model.map(ModelId::new), &req.question).await?;
    let mut body = serde_json::to_value(&answer).map_err(|e| ApiError::from(shovel_core::BackendError::Internal(e.to_string())))?;
    if req.svg {
        body["svg"] = answer.svg().map(Value::String).unwrap_or(Value::Null);
    }
    Ok(Json(body))
}

/// `POST /api/askdata/feedback`: `{question, sql?, verdict: correct|wrong, corrected_sql?,
/// chart?}` -> `{dataset, examples}`.
pub(crate) async fn feedback(State(st): State<AppState>, ApiJson(f): ApiJson<Feedback>) -> Result<Json<Value>, ApiError> {
    let receipt = service(&st)?.feedback(f).await?;
    Ok(Json(serde_json::to_value(receipt).unwrap_or_default()))
}
