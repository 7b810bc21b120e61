//! Request extractors: a JSON body whose errors name the offending field in OpenAI's error shape,
//! and the caller's identity.

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use shovel_core::{Principal, TenantId};

/// A JSON body. Malformed JSON, wrong types and missing fields become 400s naming the field;
/// a body over the limit becomes 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(None, "The request body is larger than the server accepts (server.max_body_bytes)")
            } else {
                ApiError::invalid("", format!("Could not read the request body: {e}"))
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        deserialize(de).map(ApiJson)
    }
}

fn deserialize<'de, T: serde::Deserialize<'de>, D: serde::Deserializer<'de, Error = serde_json::Error>>(de: D) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (param, message) = if inner.is_syntax() || inner.is_eof() {
            (String::new(), format!("The request body is not valid JSON: {inner}"))
        } else if path == "." {
            (String::new(), format!("Invalid request body: {inner}"))
        } else {
            (path.clone(), format!("Invalid value for `{path}`: {inner}"))
        };
        ApiError::invalid(param, message)
    })
}

/// Deserializes a JSON value, naming the offending field on error. Serde's `flatten` hides
/// field paths, so handlers parse flattened parts on their own first with this.
pub fn from_value<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, ApiError> {
    deserialize(v)
}

/// The caller, from the `Authorization: Bearer <key>` header. Keys are parsed now and enforced
/// when the platform issue adds tenants and keys; until then everyone is the default tenant.
impl<S: Send + Sync> FromRequestParts<S> for PrincipalExt {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let key = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            None => None,
            Some(v) => {
                let v = v.to_str().map_err(|_| ApiError::unauthorized("The Authorization header is not valid text"))?;
                let key = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).ok_or_else(|| ApiError::unauthorized("The Authorization header must be `Bearer <api key>`"))?;
                Some(key.trim().to_string())
            }
        };
        Ok(PrincipalExt(Principal { tenant: TenantId::default_tenant(), api_key: key }))
    }
}

/// Extractor wrapper for [`Principal`].
pub struct PrincipalExt(pub Principal);
