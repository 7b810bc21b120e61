//! Uploaded files (OpenAI's Files API): metadata and the seam to wherever their bytes live.

use crate::ids::TenantId;
use serde::{Deserialize, Serialize};

/// What a file is for, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Training or validation data for a fine-tune.
    FineTune,
    /// Input for a batch job.
    Batch,
    /// Anything else the user keeps.
    UserData,
}

impl Purpose {
    /// Parses the wire spelling (`fine-tune`, `batch`, `user_data`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fine-tune" => Some(Purpose::FineTune),
            "batch" => Some(Purpose::Batch),
            "user_data" => Some(Purpose::UserData),
            _ => None,
        }
    }
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::FineTune => "fine-tune",
            Purpose::Batch => "batch",
            Purpose::UserData => "user_data",
        }
    }
}

/// A stored file's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct FileObject {
    /// `file-...`.
    pub id: String,
    /// Owner.
    pub tenant: TenantId,
    /// Purpose.
    pub purpose: Purpose,
    /// The name it was uploaded with.
    pub filename: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// File store errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FileError {
    /// No such file for this tenant.
    #[error("No such file: {id}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// Storage failed; details are logged.
    #[error("file storage failed: {0}")]
    Internal(String),
}

/// Where uploaded files live: metadata rows plus content blobs, written atomically.
#[async_trait::async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Stores a new file; the content is complete on disk before the file is visible.
    async fn create(&self, tenant: &TenantId, purpose: Purpose, filename: &str, data: &[u8]) -> Result<FileObject, FileError>;
    /// The tenant's files, newest first, optionally of one purpose.
    async fn list(&self, tenant: &TenantId, purpose: Option<Purpose>) -> Result<Vec<FileObject>, FileError>;
    /// One file's metadata.
    async fn get(&self, tenant: &TenantId, id: &str) -> Result<FileObject, FileError>;
    /// One file's content.
    async fn content(&self, tenant: &TenantId, id: &str) -> Result<Vec<u8>, FileError>;
    /// Deletes a file.
    async fn delete(&self, tenant: &TenantId, id: &str) -> Result<(), FileError>;
}
