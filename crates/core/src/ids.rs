//! Identifiers shared by every crate: tenants, models and the caller's identity.
//!
//! Tenancy is designed in from the start: every stored row carries a [`TenantId`] and every
//! handler receives a [`Principal`]. Until the platform issue adds keys and tenants there is one
//! tenant, [`TenantId::default_tenant`].

use serde::{Deserialize, Serialize};
use std::fmt;

/// A tenant: the unit of isolation for files, models, jobs and usage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

impl TenantId {
    /// The single tenant every request belongs to until multi-tenancy is switched on.
    pub fn default_tenant() -> Self {
        TenantId("default".to_string())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A model's public id, as clients name it in `model` (e.g. `smollm2-135m-instruct`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelId(pub String);

impl ModelId {
    /// Wraps a string as a model id.
    pub fn new(s: impl Into<String>) -> Self {
        ModelId(s.into())
    }
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Who is calling: resolved once per request by the server's extractor and passed down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant the caller acts for.
    pub tenant: TenantId,
    /// The bearer key the caller presented, if any (not yet enforced).
    pub api_key: Option<String>,
}

impl Principal {
    /// The anonymous caller of the single default tenant.
    pub fn anonymous() -> Self {
        Principal { tenant: TenantId::default_tenant(), api_key: None }
    }
}
