//! The Files API, OpenAI-shaped: upload (multipart), list, retrieve, content, delete. Every call
//! is scoped to the caller's tenant.

use crate::error::ApiError;
use crate::extract::PrincipalExt;
use crate::AppState;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shovel_core::{FileError, FileObject, FileStore, Purpose};
use std::sync::Arc;

const TOO_LARGE: &str = "The file is larger than the server accepts (server.max_file_bytes)";

fn file_json(f: &FileObject) -> Value {
    json!({
        "id": f.id, "object": "file", "bytes": f.bytes, "created_at": f.created_at,
        "filename": f.filename, "purpose": f.purpose.as_str(), "status": "processed", "sha256": f.sha256,
    })
}

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::NotFound { .. } => ApiError { code: Some("file_not_found"), param: Some("file_id".into()), ..ApiError::not_found(e.to_string()) },
            FileError::Internal(_) => {
                ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: "The server could not store or read the file.".into(), kind: "server_error", param: None, code: None, retry_after: None }
            }
        }
    }
}

fn store(st: &AppState) -> Result<&Arc<dyn FileStore>, ApiError> {
    st.files.as_ref().ok_or_else(|| ApiError::not_found("This server has no file storage configured"))
}

/// POST /v1/files
pub async fn upload(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, mut mp: Multipart) -> Result<Json<Value>, ApiError> {
    let files = store(&st)?;
    let mut purpose = None;
    let mut file: Option<(String, Vec<u8>)> = None;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(ApiError::too_large(Some("file"), TOO_LARGE)),
            Err(e) => return Err(ApiError::invalid("", format!("Invalid multipart body: {e}"))),
        };
        match field.name() {
            Some("purpose") => {
                let text = field.text().await.map_err(|e| ApiError::invalid("purpose", e.to_string()))?;
                purpose = Some(Purpose::parse(text.trim()).ok_or_else(|| ApiError::invalid("purpose", format!("`purpose` must be one of fine-tune, batch, user_data; got `{text}`")))?);
            }
            Some("file") => {
                let name = field.file_name().unwrap_or("upload").to_string();
                let bytes =
                    field.bytes().await.map_err(
                        |e| {
                            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                                ApiError::too_large(Some("file"), TOO_LARGE)
                            } else {
                                ApiError::invalid("file", e.to_string())
                            }
                        },
                    )?;
                file = Some((name, bytes.to_vec()));
            }
            _ => {}
        }
    }
    let purpose = purpose.ok_or_else(|| ApiError::invalid("purpose", "`purpose` is required"))?;
    let (name, bytes) = file.ok_or_else(|| ApiError::invalid("file", "`file` is required"))?;
    if bytes.is_empty() {
        return Err(ApiError::invalid("file", "The file is empty"));
    }
    let f = files.create(&p.tenant, purpose, &name, &bytes).await?;
    Ok(Json(file_json(&f)))
}

/// `?purpose=` filter.
#[derive(Deserialize)]
pub struct ListQuery {
    purpose: Option<String>,
}

/// GET /v1/files
pub async fn list(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let purpose = match q.purpose.as_deref() {
        None => None,
        Some(s) => Some(Purpose::parse(s).ok_or_else(|| ApiError::invalid("purpose", format!("unknown purpose `{s}`")))?),
    };
    let data: Vec<Value> = store(&st)?.list(&p.tenant, purpose).await?.iter().map(file_json).collect();
    Ok(Json(json!({"object": "list", "data": data, "has_more": false})))
}

/// GET /v1/files/{id}
pub async fn get(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(file_json(&store(&st)?.get(&p.tenant, &id).await?)))
}

/// GET /v1/files/{id}/content
pub async fn content(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, Path(id): Path<String>) -> Result<Response, ApiError> {
    let bytes = store(&st)?.content(&p.tenant, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// DELETE /v1/files/{id}
pub async fn delete(State(st): State<AppState>, PrincipalExt(p): PrincipalExt, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    store(&st)?.delete(&p.tenant, &id).await?;
    Ok(Json(json!({"id": id, "object": "file", "deleted": true})))
}
