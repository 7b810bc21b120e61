//! The web console: static pages compiled into the binary, talking to the same HTTP API as
//! any client (no server-side rendering, no route of its own beyond the pages). One page so
//! far: Ask-Data (`/console/askdata`): a question box, the answer, the chart the server draws
//! (SVG), the rows, the SQL and the ECharts option, and feedback that becomes a teaching
//! example.

use axum::http::header;
use axum::response::{IntoResponse, Redirect};

const ASKDATA_HTML: &str = include_str!("../console/askdata.html");
const ASKDATA_JS: &str = include_str!("../console/askdata.js");

/// Scripts only from this origin (no inline script, no event-handler attributes): a chart's
/// SVG is inserted as markup parsed from the API's JSON, and whatever text it carries from the
/// database cannot run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// `GET /console`: the first page.
pub(crate) async fn index() -> Redirect {
    Redirect::temporary("/console/askdata")
}

/// `GET /console/askdata`.
pub(crate) async fn askdata() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, CSP)], ASKDATA_HTML)
}

/// `GET /console/askdata.js`: the page's script.
pub(crate) async fn askdata_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], ASKDATA_JS)
}
