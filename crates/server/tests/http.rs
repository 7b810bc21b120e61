//! The OpenAI API through the real router, with the fake echo backend: no model, no socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use shovel_core::testing::EchoBackend;
use shovel_server::{app, AppState, ServerConfig};
use std::sync::Arc;
use tower::ServiceExt;

fn router() -> axum::Router {
    app(AppState::new(Arc::new(EchoBackend::new("echo"))), &ServerConfig { max_body_bytes: 4096 })
}

async fn call(method: &str, uri: &str, body: Option<String>) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri).header("authorization", "Bearer sk-test");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let resp = router().oneshot(req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn post(uri: &str, body: Value) -> (StatusCode, Value, String) {
    let (s, text) = call("POST", uri, Some(body.to_string())).await;
    (s, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

fn assert_error(v: &Value, param: Option<&str>) {
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    assert!(e.get("code").is_some() && e.get("param").is_some(), "{v}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{v}");
    }
}

#[tokio::test]
async fn lists_models() {
    let (s, text) = call("GET", "/v1/models", None).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "echo");
}

#[tokio::test]
async fn chat_completion_with_usage() {
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "messages": [{"role": "user", "content": "hello big world"}]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], " hello big world");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}));
}

#[tokio::test]
async fn n_choices_and_max_tokens() {
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "n": 2, "max_tokens": 2, "messages": [{"role": "user", "content": "a b c"}]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["message"]["content"], " a b");
    assert_eq!(v["choices"][1]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn streams_deltas_usage_and_done() {
    let body = json!({"model": "echo", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "one two"}]});
    let (s, text) = call("POST", "/v1/chat/completions", Some(body.to_string())).await;
    assert_eq!(s, StatusCode::OK);
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(*data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str()).collect();
    assert_eq!(content, " one two");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 4);
    assert!(chunks.iter().any(|c| c["choices"].get(0).is_some_and(|c| c["finish_reason"] == "stop")));
}

#[tokio::test]
async fn completions_stop_strings() {
    let (s, v, _) = post("/v1/completions", json!({"model": "echo", "prompt": "alpha beta gamma", "stop": ["gam"]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], " alpha beta");
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, Some("model"));
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (s, text) = call("POST", "/v1/chat/completions", Some("{not json".into())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&serde_json::from_str(&text).unwrap(), None);
}

#[tokio::test]
async fn wrong_type_names_the_field() {
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "temperature": "hot", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("temperature"), "{v}");
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "messages": [{"role": "user", "content": 5}]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "messages[0].content", "{v}");
}

#[tokio::test]
async fn bad_role_and_ranges_are_400_naming_the_field() {
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "messages": [{"role": "robot", "content": "x"}]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, Some("messages[0].role"));
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "temperature": 3, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, Some("temperature"));
}

#[tokio::test]
async fn empty_messages_is_400() {
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "messages": []})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, Some("messages"));
}

#[tokio::test]
async fn context_overflow_names_both_numbers() {
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "max_tokens": 100, "messages": [{"role": "user", "content": "a b c"}]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("64") && m.contains("100") && m.contains('3'), "{m}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let big = "x ".repeat(4000);
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "messages": [{"role": "user", "content": big}]})).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&v, None);
}

#[tokio::test]
async fn structured_output_is_refused_clearly_until_supported() {
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, Some("response_format"));
}

#[tokio::test]
async fn health_metrics_and_unknown_route() {
    assert_eq!(call("GET", "/health", None).await.0, StatusCode::OK);
    let _ = post("/v1/chat/completions", json!({"model": "echo", "messages": [{"role": "user", "content": "x"}]})).await;
    let (s, text) = call("GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("# TYPE shovel_requests_total counter"), "{text}");
    let (s, text) = call("GET", "/v1/nothing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&serde_json::from_str(&text).unwrap(), None);
}
