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
    app(AppState::new(Arc::new(EchoBackend::new("echo"))), &ServerConfig { max_body_bytes: 4096, max_file_bytes: 1 << 20 })
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

async fn call_raw(body: Value) -> (StatusCode, String) {
    call("POST", "/v1/chat/completions", Some(body.to_string())).await
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
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6, "prompt_tokens_details": {"cached_tokens": 0}}));
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

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

#[tokio::test]
async fn a_reply_naming_a_tool_comes_back_as_a_tool_call() {
    // The echo model repeats the last message: here, a call of the tool.
    let call = r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#;
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "tools": weather_tools(), "messages": [{"role": "user", "content": call}]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    assert_eq!(c["message"]["content"], Value::Null);
    let tc = &c["message"]["tool_calls"][0];
    assert!(tc["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(tc["type"], "function");
    assert_eq!(tc["function"]["name"], "get_weather");
    assert_eq!(serde_json::from_str::<Value>(tc["function"]["arguments"].as_str().unwrap()).unwrap(), json!({"city": "Paris"}));
    // Streamed: the call arrives whole in one delta, then the finish.
    let body = json!({"model": "echo", "stream": true, "tools": weather_tools(), "messages": [{"role": "user", "content": call}]});
    let (_, text) = call_raw(body).await;
    let chunks: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0][0]["index"], 0);
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    // A text reply stays text; `tool_choice: none` and earlier calls in the conversation work.
    let (s, v, _) = post(
        "/v1/chat/completions",
        json!({"model": "echo", "tools": weather_tools(), "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], " Result of get_weather: sunny");
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "tools": weather_tools(), "tool_choice": "none", "messages": [{"role": "user", "content": call}]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn several_calls_in_one_reply_come_back_as_several_tool_calls() {
    let two = "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Tokyo\"}}";
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "tools": weather_tools(), "parallel_tool_calls": true, "messages": [{"role": "user", "content": two}]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    let calls = c["message"]["tool_calls"].as_array().unwrap();
    let cities: Vec<Value> = calls.iter().map(|t| serde_json::from_str::<Value>(t["function"]["arguments"].as_str().unwrap()).unwrap()["city"].clone()).collect();
    assert_eq!(cities, [json!("Paris"), json!("Tokyo")]);
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    // Streamed: both in one delta, each with its index.
    let (_, text) = call_raw(json!({"model": "echo", "stream": true, "tools": weather_tools(), "parallel_tool_calls": true, "messages": [{"role": "user", "content": two}]})).await;
    let chunks: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(deltas.len(), 1, "{text}");
    assert_eq!((deltas[0][0]["index"].clone(), deltas[0][1]["index"].clone()), (json!(0), json!(1)));
    // By default (or `parallel_tool_calls: false`) a reply makes one call, so two lines are text.
    let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "tools": weather_tools(), "messages": [{"role": "user", "content": two}]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
}

#[tokio::test]
async fn bad_tools_are_400s_naming_the_field() {
    let cases = [
        (json!({"tools": [{"type": "function"}]}), "tools[0].function"),
        (json!({"tools": [{"type": "function", "function": {"name": "x y"}}]}), "tools[0].function.name"),
        (json!({"tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "other"}}}), "tool_choice"),
        (json!({"tools": weather_tools(), "response_format": {"type": "json_object"}}), "response_format"),
    ];
    for (extra, param) in cases {
        let mut body = json!({"model": "echo", "messages": [{"role": "user", "content": "x"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (s, v, _) = post("/v1/chat/completions", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_error(&v, Some(param));
    }
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
async fn malformed_response_formats_are_400s_naming_the_field() {
    let cases = [
        (json!("json"), "response_format"),
        (json!({"type": "yaml"}), "response_format.type"),
        (json!({}), "response_format.type"),
        (json!({"type": "json_schema"}), "response_format.json_schema"),
        (json!({"type": "json_schema", "json_schema": {"schema": {}}}), "response_format.json_schema.name"),
        (json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}), "response_format.json_schema.name"),
        (json!({"type": "json_schema", "json_schema": {"name": "a", "schema": [1]}}), "response_format.json_schema.schema"),
        (json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "strict": "yes"}}), "response_format.json_schema.strict"),
    ];
    for (rf, param) in cases {
        let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "response_format": rf, "messages": [{"role": "user", "content": "x"}]})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{rf}: {v}");
        assert_error(&v, Some(param));
    }
    // Well-formed ones reach the backend (the scripted one ignores the grammar).
    for rf in [json!({"type": "text"}), json!({"type": "json_object"}), json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}})] {
        let (s, v, _) = post("/v1/chat/completions", json!({"model": "echo", "response_format": rf, "messages": [{"role": "user", "content": "x"}]})).await;
        assert_eq!(s, StatusCode::OK, "{rf}: {v}");
    }
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

mod files {
    use super::*;
    use shovel_store::{LocalFiles, Store};

    async fn files_router(dir: &std::path::Path) -> axum::Router {
        let store = Store::open(&dir.join("db")).await.unwrap();
        let files = Arc::new(LocalFiles::new(store, dir.join("files")));
        app(AppState::new(Arc::new(EchoBackend::new("echo"))).with_files(files), &ServerConfig { max_body_bytes: 4096, max_file_bytes: 64 * 1024 })
    }

    fn multipart(purpose: Option<&str>, file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
        let boundary = "XBOUNDARYX";
        let mut body = Vec::new();
        if let Some(p) = purpose {
            body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{p}\r\n").as_bytes());
        }
        if let Some((name, data)) = file {
            body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
            body.extend(data);
            body.extend(b"\r\n");
        }
        body.extend(format!("--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), body)
    }

    async fn send(r: &axum::Router, method: &str, uri: &str, ct: Option<String>, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let resp = r.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
        let s = resp.status();
        (s, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
    }

    #[tokio::test]
    async fn upload_list_content_delete() {
        let dir = tempfile::tempdir().unwrap();
        let r = files_router(dir.path()).await;
        // Larger than the chat body limit, within the file limit.
        let data = vec![b'x'; 10_000];
        let (ct, body) = multipart(Some("fine-tune"), Some(("train.jsonl", &data)));
        let (s, b) = send(&r, "POST", "/v1/files", Some(ct), body).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        let f: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!((f["object"].as_str(), f["bytes"].as_u64(), f["purpose"].as_str(), f["filename"].as_str()), (Some("file"), Some(10_000), Some("fine-tune"), Some("train.jsonl")));
        let id = f["id"].as_str().unwrap();
        let (s, b) = send(&r, "GET", "/v1/files?purpose=fine-tune", None, vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["data"][0]["id"], id);
        let (s, b) = send(&r, "GET", &format!("/v1/files/{id}/content"), None, vec![]).await;
        assert_eq!((s, b), (StatusCode::OK, data));
        let (s, b) = send(&r, "DELETE", &format!("/v1/files/{id}"), None, vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["deleted"], true);
        let (s, b) = send(&r, "GET", &format!("/v1/files/{id}"), None, vec![]).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["error"]["code"], "file_not_found");
    }

    #[tokio::test]
    async fn bad_uploads_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let r = files_router(dir.path()).await;
        for (purpose, file, param, status) in [
            (None, Some(("a.jsonl", &b"x"[..])), "purpose", StatusCode::BAD_REQUEST),
            (Some("homework"), Some(("a.jsonl", &b"x"[..])), "purpose", StatusCode::BAD_REQUEST),
            (Some("fine-tune"), None, "file", StatusCode::BAD_REQUEST),
            (Some("fine-tune"), Some(("a.jsonl", &b""[..])), "file", StatusCode::BAD_REQUEST),
        ] {
            let (ct, body) = multipart(purpose, file);
            let (s, b) = send(&r, "POST", "/v1/files", Some(ct), body).await;
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(s, status, "{v}");
            assert_eq!(v["error"]["param"], param, "{v}");
        }
        let big = vec![b'x'; 100 * 1024];
        let (ct, body) = multipart(Some("fine-tune"), Some(("big.jsonl", &big)));
        let (s, _) = send(&r, "POST", "/v1/files", Some(ct), body).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        let (s, b) = send(&r, "GET", "/v1/files", None, vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["data"], json!([]), "nothing half-uploaded is listed");
    }
}

/// Records what the API hands the fine-tuning service.
#[derive(Default)]
struct RecordingFt(std::sync::Mutex<Vec<shovel_core::CreateJob>>);

fn job(id: &str, status: &str) -> shovel_core::Job {
    shovel_core::Job {
        id: id.into(),
        model: "echo".into(),
        created_at: 1,
        finished_at: None,
        fine_tuned_model: None,
        status: status.into(),
        training_file: "file-1".into(),
        validation_file: None,
        hyperparameters: json!({"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0, "lora": {"r": 16}}),
        trained_tokens: None,
        error: None,
        seed: 7,
        suffix: None,
    }
}

#[async_trait::async_trait]
impl shovel_core::FineTuning for RecordingFt {
    async fn create(&self, _t: &shovel_core::TenantId, req: shovel_core::CreateJob) -> Result<shovel_core::Job, shovel_core::FtError> {
        if req.model != "echo" {
            return Err(shovel_core::FtError::Invalid { message: "no such model".into(), param: Some("model".into()) });
        }
        self.0.lock().unwrap().push(req);
        Ok(job("ftjob-1", "queued"))
    }
    async fn list(&self, _t: &shovel_core::TenantId, _after: Option<&str>, limit: usize) -> Result<Vec<shovel_core::Job>, shovel_core::FtError> {
        Ok((0..limit.min(3)).map(|i| job(&format!("ftjob-{i}"), "succeeded")).collect())
    }
    async fn get(&self, _t: &shovel_core::TenantId, id: &str) -> Result<shovel_core::Job, shovel_core::FtError> {
        Err(shovel_core::FtError::NotFound { message: format!("No fine-tuning job {id}"), param: Some("fine_tuning_job_id".into()) })
    }
    async fn cancel(&self, _t: &shovel_core::TenantId, id: &str) -> Result<shovel_core::Job, shovel_core::FtError> {
        Ok(job(id, "cancelled"))
    }
    async fn events(&self, _t: &shovel_core::TenantId, _id: &str, _a: Option<&str>, _l: usize) -> Result<Vec<shovel_core::JobEvent>, shovel_core::FtError> {
        Ok(vec![shovel_core::JobEvent { id: "ftevent-1".into(), created_at: 1, level: "info".into(), message: "Step 1/2".into(), data: Some(json!({"step": 1})) }])
    }
    async fn checkpoints(&self, _t: &shovel_core::TenantId, _id: &str) -> Result<Vec<shovel_core::JobCheckpoint>, shovel_core::FtError> {
        Ok(vec![])
    }
}

async fn ft_call(ft: Arc<RecordingFt>, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let state = AppState::new(Arc::new(EchoBackend::new("echo"))).with_fine_tuning(ft);
    let router = app(state, &ServerConfig::default());
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let resp = router.oneshot(req.body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty)).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn fine_tuning_requests_are_parsed_into_the_service_call() {
    let ft = Arc::new(RecordingFt::default());
    let body = json!({
        "model": "echo", "training_file": "file-1", "suffix": "s", "seed": 3,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "auto", "batch_size": 2, "learning_rate_multiplier": 0.5}}},
        "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj"], "max_length": 128},
        "metadata": {"team": "x"}
    });
    let (s, v) = ft_call(ft.clone(), "POST", "/v1/fine_tuning/jobs", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["object"].as_str(), v["status"].as_str()), (Some("fine_tuning.job"), Some("queued")));
    assert_eq!(v["hyperparameters"], json!({"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0}));
    assert_eq!(v["lora"]["r"], 16);
    let got = ft.0.lock().unwrap()[0].clone();
    assert_eq!((got.n_epochs, got.batch_size, got.learning_rate_multiplier), (None, Some(2), Some(0.5)));
    assert_eq!((got.lora_r, got.lora_alpha, got.max_length, got.seed), (Some(8), Some(16.0), Some(128), Some(3)));
    assert_eq!(got.target_modules, Some(vec!["q_proj".to_string()]));
}

#[tokio::test]
async fn fine_tuning_errors_name_the_parameter() {
    let ft = Arc::new(RecordingFt::default());
    for (body, param, status) in [
        (json!({"model": "echo", "training_file": "f", "hyperparameters": {"n_epochs": "lots"}}), "hyperparameters.n_epochs", StatusCode::BAD_REQUEST),
        (json!({"model": "echo", "training_file": "f", "method": {"type": "dpo"}}), "method.type", StatusCode::BAD_REQUEST),
        (json!({"model": "echo"}), "", StatusCode::BAD_REQUEST),
        (json!({"model": "other", "training_file": "f"}), "model", StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = ft_call(ft.clone(), "POST", "/v1/fine_tuning/jobs", Some(body)).await;
        assert_eq!(s, status, "{v}");
        assert_error(&v, if param.is_empty() { None } else { Some(param) });
    }
    let (s, v) = ft_call(ft.clone(), "POST", "/v1/fine_tuning/jobs", Some(json!({"model": "echo", "training_file": "f", "lora": {"rank": 8}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("rank"), "{v}");
    let (s, v) = ft_call(ft.clone(), "GET", "/v1/fine_tuning/jobs/ftjob-nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_error(&v, Some("fine_tuning_job_id"));
    let (s, v) = ft_call(ft.clone(), "GET", "/v1/fine_tuning/jobs?limit=2", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["data"].as_array().unwrap().len(), v["has_more"].as_bool()), (2, Some(true)));
    let (s, v) = ft_call(ft.clone(), "GET", "/v1/fine_tuning/jobs?limit=0", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, Some("limit"));
    let (s, v) = ft_call(ft.clone(), "GET", "/v1/fine_tuning/jobs/ftjob-1/events", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["data"][0]["object"].as_str(), v["data"][0]["type"].as_str()), (Some("fine_tuning.job.event"), Some("metrics")));
    let (s, v) = ft_call(ft, "POST", "/v1/fine_tuning/jobs/ftjob-9/cancel", None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("cancelled")));
}

#[tokio::test]
async fn embeddings_in_every_input_shape() {
    let (s, v, _) = post("/v1/embeddings", json!({"model": "echo", "input": "hello big world"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "echo");
    assert_eq!(v["data"][0], json!({"object": "embedding", "index": 0, "embedding": [3.0, 15.0]}));
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let (s, v, _) = post("/v1/embeddings", json!({"model": "echo", "input": ["a b", "c"]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["embedding"], json!([1.0, 1.0]));
    // Token ids: one list, or a list of lists.
    let (_, v, _) = post("/v1/embeddings", json!({"model": "echo", "input": [5, 7]})).await;
    assert_eq!(v["data"][0]["embedding"], json!([2.0, 12.0]), "{v}");
    let (_, v, _) = post("/v1/embeddings", json!({"model": "echo", "input": [[5], [1, 2, 3]]})).await;
    assert_eq!(v["data"][1]["embedding"], json!([3.0, 6.0]), "{v}");
    // base64: little-endian f32, what the SDKs request by default.
    let (s, v, _) = post("/v1/embeddings", json!({"model": "echo", "input": "hello big world", "encoding_format": "base64"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(floats, vec![3.0, 15.0]);
    // The model's own width is accepted as `dimensions`.
    let (s, _, _) = post("/v1/embeddings", json!({"model": "echo", "input": "x", "dimensions": 2})).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn bad_embedding_requests_name_the_field() {
    let cases = [
        (json!({"input": "x"}), "model"),
        (json!({"model": "echo"}), "input"),
        (json!({"model": "echo", "input": []}), "input"),
        (json!({"model": "echo", "input": [[]]}), "input"),
        (json!({"model": "echo", "input": 5}), "input"),
        (json!({"model": "echo", "input": [1, -2]}), "input"),
        (json!({"model": "echo", "input": ["a", {"b": 1}]}), "input"),
        (json!({"model": "echo", "input": "x", "encoding_format": "int8"}), "encoding_format"),
        (json!({"model": "echo", "input": "x", "dimensions": 0}), "dimensions"),
        (json!({"model": "echo", "input": "x", "dimensions": 64}), "dimensions"),
        (json!({"model": "echo", "input": "x", "user": 3}), "user"),
    ];
    for (body, param) in cases {
        let (s, v, _) = post("/v1/embeddings", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_error(&v, Some(param));
    }
    let (s, v, _) = post("/v1/embeddings", json!({"model": "nope", "input": "x"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let many: Vec<String> = (0..2049).map(|i| i.to_string()).collect();
    let err = shovel_server::embeddings::parse_input(Some(&json!(many))).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("input"));
    assert!(err.message.contains("2048"), "{}", err.message);
}

/// The console's Ask-Data page: served with a CSP that allows only this origin's script, its
/// script served beside it, and every element the script looks up present in the page.
#[tokio::test]
async fn console_page_and_script_are_served_together() {
    let resp = router().oneshot(Request::builder().uri("/console").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(resp.headers()["location"], "/console/askdata");
    let resp = router().oneshot(Request::builder().uri("/console/askdata").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    let html = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(html.contains(r#"<script src="/console/askdata.js"></script>"#) && !html.contains("<script>"));
    let (status, js) = call("GET", "/console/askdata.js", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = js.split("$(\"").skip(1).filter_map(|s| s.split('"').next()).collect();
    assert!(ids.len() > 15, "{ids:?}");
    for id in ids {
        assert!(html.contains(&format!("id=\"{id}\"")), "the script looks up #{id}, which the page lacks");
    }
    for path in ["/api/askdata/ask", "/api/askdata/feedback", "/v1/models"] {
        assert!(js.contains(path), "{path}");
    }
}

/// A chat completion on `router` (a backend other than the shared echo): status and JSON body.
async fn chat_on(router: &axum::Router, body: Value) -> (StatusCode, Value) {
    let req = Request::builder().method("POST").uri("/v1/chat/completions").header("content-type", "application/json").body(Body::from(body.to_string())).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_model_with_the_hermes_format_gets_tools_and_calls_as_its_template_takes_them() {
    let echo = EchoBackend { tool_format: shovel_core::ToolFormat::Hermes, context_length: 256, ..EchoBackend::new("echo") };
    let seen = echo.last_prompt.clone();
    let router = app(AppState::new(Arc::new(echo)), &ServerConfig { max_body_bytes: 8192, max_file_bytes: 1 << 20 });
    let post = |body: Value| chat_on(&router, body);
    // The echo model repeats the last message: a call in the tags comes back as a tool call.
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let (s, v) = post(json!({"model": "echo", "tools": weather_tools(), "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": call}]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    // The template gets the tools as the request gave them, and no instructions of Shovel's.
    let Some(shovel_core::Prompt::ChatWithTools { messages, tools }) = seen.lock().unwrap().clone() else { panic!("a prompt with tools") };
    assert_eq!(tools[0]["function"]["name"], "get_weather");
    assert_eq!(messages[0].content, "Be brief.");
    // Earlier calls keep their structure (arguments as an object) and results their role,
    // even when this request offers no tools.
    let history = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    ]);
    let (s, v) = post(json!({"model": "echo", "messages": history})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], " sunny");
    let Some(shovel_core::Prompt::ChatWithTools { messages, tools }) = seen.lock().unwrap().clone() else { panic!("the tool template") };
    assert!(tools.is_empty());
    assert_eq!(messages[1].tool_calls[0]["function"]["arguments"], json!({"city": "Paris"}));
    assert_eq!((messages[2].role.as_str(), messages[2].tool_call_id.as_deref()), ("tool", Some("call_1")));
}

#[tokio::test]
async fn a_llama3_model_gets_one_call_per_assistant_turn() {
    // Llama 3's template renders one call per turn and refuses more: an earlier message with
    // two calls becomes two turns, the text with the first.
    let echo = EchoBackend { tool_format: shovel_core::ToolFormat::Llama3, context_length: 256, ..EchoBackend::new("echo") };
    let seen = echo.last_prompt.clone();
    let router = app(AppState::new(Arc::new(echo)), &ServerConfig { max_body_bytes: 8192, max_file_bytes: 1 << 20 });
    let call = |id: &str, city: &str| json!({"id": id, "type": "function", "function": {"name": "get_weather", "arguments": format!("{{\"city\":\"{city}\"}}")}});
    let body = json!({"model": "echo", "tools": weather_tools(), "messages": [
        {"role": "user", "content": "Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call("c1", "Paris"), call("c2", "Rome")]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"}
    ]});
    let (s, v) = chat_on(&router, body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let Some(shovel_core::Prompt::ChatWithTools { messages, tools }) = seen.lock().unwrap().clone() else { panic!("a prompt with tools") };
    assert_eq!(tools.len(), 1);
    let turns: Vec<(&str, &str, usize)> = messages.iter().map(|m| (m.role.as_str(), m.content.as_str(), m.tool_calls.len())).collect();
    assert_eq!(turns, [("user", "Paris and Rome?", 0), ("assistant", "Checking.", 1), ("assistant", "", 1), ("tool", "sunny", 0), ("tool", "rain", 0)]);
    assert_eq!(messages[2].tool_calls[0]["function"]["arguments"], json!({"city": "Rome"}));
}
