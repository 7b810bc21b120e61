//! Shovel's HTTP server: the OpenAI-compatible API (and, later, the platform API and console)
//! over the `InferenceBackend` seam. It knows nothing of tensors: HTTP tests run it with the fake
//! backend from `shovel_core::testing`, no model and no socket.
#![warn(missing_docs)]

mod askdata;
mod console;
pub mod dto;
pub mod embeddings;
pub mod error;
pub mod extract;
pub mod files;
pub mod fine_tuning;
pub mod metrics;
pub mod openai;
pub mod tools;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use shovel_core::InferenceBackend;
use std::sync::Arc;

pub use error::ApiError;

/// Server settings (the `[server]` section of the config file).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Largest file upload accepted, in bytes.
    pub max_file_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { max_body_bytes: 4 * 1024 * 1024, max_file_bytes: 512 * 1024 * 1024 }
    }
}

/// Shared state handed to every handler.
#[derive(Clone)]
pub struct AppState {
    /// Runs models.
    pub backend: Arc<dyn InferenceBackend>,
    /// Counters for /metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Uploaded files, when storage is configured.
    pub files: Option<Arc<dyn shovel_core::FileStore>>,
    /// Fine-tuning jobs, when a service is configured.
    pub fine_tuning: Option<Arc<dyn shovel_core::FineTuning>>,
    /// Ask-Data, when a database is configured.
    pub askdata: Option<Arc<shovel_askdata::service::AskData>>,
}

impl AppState {
    /// State over a backend.
    pub fn new(backend: Arc<dyn InferenceBackend>) -> Self {
        AppState { backend, metrics: Arc::new(metrics::Metrics::default()), files: None, fine_tuning: None, askdata: None }
    }

    /// Adds file storage.
    pub fn with_files(mut self, files: Arc<dyn shovel_core::FileStore>) -> Self {
        self.files = Some(files);
        self
    }

    /// Adds Ask-Data over a database.
    pub fn with_askdata(mut self, askdata: Arc<shovel_askdata::service::AskData>) -> Self {
        self.askdata = Some(askdata);
        self
    }

    /// Adds the fine-tuning jobs service.
    pub fn with_fine_tuning(mut self, ft: Arc<dyn shovel_core::FineTuning>) -> Self {
        self.fine_tuning = Some(ft);
        self
    }
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn metrics_text(axum::extract::State(st): axum::extract::State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let mut text = st.metrics.render();
    let gauges = st.backend.gauges().await;
    let mut families: Vec<(&str, &str)> = Vec::new();
    for g in &gauges {
        if !families.iter().any(|(f, _)| *f == g.family) {
            families.push((g.family, g.help));
        }
    }
    for (family, help) in families {
        text.push_str(&format!("# HELP {family} {help}\n# TYPE {family} gauge\n"));
        for g in gauges.iter().filter(|g| g.family == family) {
            text.push_str(&format!("{family}{{model=\"{}\"}} {}\n", g.model, g.value));
        }
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("Unknown endpoint {uri}"))
}

/// The application router.
pub fn app(state: AppState, config: &ServerConfig) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{id}", get(openai::get_model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/files", post(files::upload).layer(DefaultBodyLimit::max(config.max_file_bytes)).get(files::list))
        .route("/v1/files/{id}", get(files::get).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/fine_tuning/jobs", post(fine_tuning::create).get(fine_tuning::list))
        .route("/v1/fine_tuning/jobs/{id}", get(fine_tuning::get))
        .route("/v1/fine_tuning/jobs/{id}/cancel", post(fine_tuning::cancel))
        .route("/v1/fine_tuning/jobs/{id}/events", get(fine_tuning::events))
        .route("/v1/fine_tuning/jobs/{id}/checkpoints", get(fine_tuning::checkpoints))
        .route("/api/askdata/ask", post(askdata::ask))
        .route("/api/askdata/feedback", post(askdata::feedback))
        .route("/console", get(console::index))
        .route("/console/askdata", get(console::askdata))
        .route("/console/askdata.js", get(console::askdata_js))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}
