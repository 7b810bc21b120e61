//! POST /v1/embeddings, OpenAI-shaped: `input` as a string, an array of strings, an array of
//! token ids or an array of such arrays; `encoding_format` `float` (default) or `base64`
//! (little-endian f32, what the official SDKs ask for by default); `dimensions` only as the
//! model's own width (MiniLM-style models cannot be shortened).

use crate::error::ApiError;
use crate::extract::{ApiJson, PrincipalExt};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};
use shovel_core::{EmbedInput, EmbedRequest, ModelId};
use std::time::Instant;

/// Inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

const ENDPOINT: &str = "embeddings";

/// The `input` field as the backend takes it, or a 400 naming what is wrong.
pub fn parse_input(v: Option<&Value>) -> Result<Vec<EmbedInput>, ApiError> {
    let bad = |m: String| ApiError::invalid("input", m);
    let tokens = |a: &[Value], at: &str| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .enumerate()
            .map(|(j, t)| t.as_u64().filter(|&x| x <= u32::MAX as u64).map(|x| x as u32).ok_or_else(|| bad(format!("{at}[{j}] must be a token id (a non-negative integer), got {t}"))))
            .collect()
    };
    let inputs = match v {
        None | Some(Value::Null) => return Err(bad("input is required: a string, an array of strings, or token ids".into())),
        Some(Value::String(s)) => vec![EmbedInput::Text(s.clone())],
        Some(Value::Array(a)) if a.is_empty() => return Err(bad("input must not be an empty array".into())),
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => vec![EmbedInput::Tokens(tokens(a, "input")?)],
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(EmbedInput::Text(s.clone())),
                Value::Array(t) if !t.is_empty() => Ok(EmbedInput::Tokens(tokens(t, &format!("input[{i}]"))?)),
                Value::Array(_) => Err(bad(format!("input[{i}] must not be an empty array"))),
                other => Err(bad(format!("input[{i}] must be a string or an array of token ids, got {other}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(bad(format!("input must be a string or an array, got {other}"))),
    };
    if inputs.len() > MAX_INPUTS {
        return Err(bad(format!("input has {} items; at most {MAX_INPUTS} are allowed per request", inputs.len())));
    }
    Ok(inputs)
}

/// POST /v1/embeddings
pub async fn create(State(st): State<AppState>, PrincipalExt(_p): PrincipalExt, ApiJson(body): ApiJson<Value>) -> Result<Json<Value>, ApiError> {
    let start = Instant::now();
    let result = embed(&st, &body).await;
    st.metrics.request(ENDPOINT, result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200));
    st.metrics.duration(start.elapsed().as_secs_f64());
    result.map(Json)
}

async fn embed(st: &AppState, body: &Value) -> Result<Value, ApiError> {
    let Some(obj) = body.as_object() else { return Err(ApiError::invalid("", "the request body must be a JSON object")) };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(ApiError::invalid("model", "model is required (a string)")),
    };
    let base64 = match obj.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => return Err(ApiError::invalid("encoding_format", format!("encoding_format must be `float` or `base64`, got {other}"))),
    };
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|&d| d > 0).ok_or_else(|| ApiError::invalid("dimensions", format!("dimensions must be a positive integer, got {v}")))? as usize),
    };
    if let Some(u) = obj.get("user").filter(|u| !u.is_string() && !u.is_null()) {
        return Err(ApiError::invalid("user", format!("user must be a string, got {u}")));
    }
    let inputs = parse_input(obj.get("input"))?;
    let out = st.backend.embed(EmbedRequest { model: ModelId::new(&model), inputs }).await?;
    let width = out.vectors.first().map_or(0, Vec::len);
    if let Some(d) = dimensions.filter(|&d| d != width) {
        return Err(ApiError::invalid("dimensions", format!("`{model}` makes {width}-dimensional vectors and cannot shorten them; dimensions {d} is not supported")));
    }
    st.metrics.tokens(&model, out.prompt_tokens, 0);
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens}}))
}
