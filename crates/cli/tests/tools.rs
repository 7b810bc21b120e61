//! Tool calls in a model's own format, through the real router and the real engine: a tiny
//! random model whose `tool_use` chat template lists tools and writes calls in Hermes-style
//! `<tool_call>` tags (as Hermes 3's does). The reply is held to the tags and the tool's schema, so
//! even random weights make a well-formed call.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use shovel_core::{ModelId, ModelInfo, ModelKind};
use shovel_engine::testing::{write_tiny_llama, write_tiny_mistral, CHATML_TEMPLATE, HERMES_TEMPLATE, LLAMA3_TEMPLATE, MISTRAL_ARGS_TEMPLATE, MISTRAL_TEMPLATE};
use shovel_engine::{CatalogEntry, Engine, EngineConfig};
use shovel_server::{app, AppState, ServerConfig};
use std::sync::Arc;
use tower::ServiceExt;

async fn chat(router: &axum::Router, body: Value) -> Value {
    let req = Request::builder().method("POST").uri("/v1/chat/completions").header("content-type", "application/json").body(Body::from(body.to_string())).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    v
}

/// The router over a tiny random model written to `dir` with `template`, served as `id`.
fn serve_tiny(dir: &std::path::Path, seed: u64, template: impl Into<Value>, id: &str) -> axum::Router {
    write_tiny_llama(dir, seed, template, 2048);
    serve(dir, id)
}

/// The router over the model already written to `dir`, served as `id`.
fn serve(dir: &std::path::Path, id: &str) -> axum::Router {
    let info = ModelInfo { id: ModelId::new(id), owned_by: "test".into(), created: 0, kind: ModelKind::Chat };
    let engine = Engine::new(EngineConfig { max_context: 2048, ..Default::default() }, vec![CatalogEntry { info, path: dir.to_path_buf(), base: None }]);
    app(AppState::new(Arc::new(engine)), &ServerConfig { max_body_bytes: 1 << 20, max_file_bytes: 1 << 20 })
}

/// One tool whose arguments are an enum, so even random weights finish a call.
fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"], "additionalProperties": false}}}])
}

/// What the model wrote in a choice, token by token (from its logprobs).
fn written(choice: &Value) -> String {
    choice["logprobs"]["content"].as_array().map(|t| t.iter().filter_map(|t| t["token"].as_str()).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_its_own_tool_call_format_calls_tools_in_it() {
    let dir = tempfile::tempdir().unwrap();
    // Named templates, as Hermes 2 Pro and 3 ship them: the tool_use one serves prompts with tools.
    let router = serve_tiny(dir.path(), 7, json!([{"name": "default", "template": CHATML_TEMPLATE}, {"name": "tool_use", "template": HERMES_TEMPLATE}]), "tiny-hermes");
    let tools = weather_tool();
    let ask = json!([{"role": "user", "content": "Weather?"}]);

    let v = chat(&router, json!({"model": "tiny-hermes", "tools": tools, "tool_choice": "required", "messages": ask, "max_tokens": 100, "temperature": 0, "logprobs": true})).await;
    let c = &v["choices"][0];
    // What the model wrote, token by token: the call in its tags.
    let raw = written(c);
    assert!(raw.starts_with("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"") && raw.ends_with("}\n</tool_call>"), "{raw:?} in {v}");
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    let call = &c["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{v}");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["unit"] == "c" || args["unit"] == "f", "{args}");

    // The template, not a system message of Shovel's, lists the tools: without them (`none`)
    // the prompt is shorter by at least the tool's definition (one token per byte here).
    let none = chat(&router, json!({"model": "tiny-hermes", "tools": tools, "tool_choice": "none", "messages": ask, "max_tokens": 1})).await;
    let (with, without) = (v["usage"]["prompt_tokens"].as_u64().unwrap(), none["usage"]["prompt_tokens"].as_u64().unwrap());
    assert!(with > without + tools[0]["function"]["parameters"].to_string().len() as u64, "{with} vs {without}");

    // The call and its result go back into the conversation in the template's own shape.
    let turn2 = json!([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call["id"], "type": "function", "function": call["function"]}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21"}
    ]);
    let v2 = chat(&router, json!({"model": "tiny-hermes", "tools": tools, "tool_choice": "none", "messages": turn2, "max_tokens": 1, "logprobs": true})).await;
    let grown = v2["usage"]["prompt_tokens"].as_u64().unwrap();
    // The call and the result are in the prompt through the tool template (the default ChatML
    // one would drop the call): at least the call's JSON and both tags' text longer.
    let call_text = format!("{{\"name\": \"get_weather\", \"arguments\": {args}}}");
    assert!(grown >= without + (call_text.len() + "<tool_call>".len() + "<tool_response>".len() + "sunny, 21".len()) as u64, "{grown} vs {without}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llama3_model_calls_tools_as_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let router = serve_tiny(dir.path(), 9, LLAMA3_TEMPLATE, "tiny-llama3");
    let tools = weather_tool();
    let ask = json!([{"role": "user", "content": "Weather?"}]);
    let v = chat(&router, json!({"model": "tiny-llama3", "tools": tools, "tool_choice": "required", "parallel_tool_calls": true, "messages": ask, "max_tokens": 100, "logprobs": true})).await;
    let c = &v["choices"][0];
    let raw = written(c);
    assert!(raw.starts_with("{\"name\": \"get_weather\", \"parameters\": {\"unit\": \"") && raw.ends_with("}}"), "{raw:?} in {v}");
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    let call = &c["message"]["tool_calls"][0];
    assert_eq!(c["message"]["tool_calls"].as_array().unwrap().len(), 1, "one call per reply: {v}");
    // The call and its result in the next turn, through the template's own shape.
    let turn2 = json!([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call["id"], "type": "function", "function": call["function"]}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21"}
    ]);
    let none = chat(&router, json!({"model": "tiny-llama3", "messages": ask, "max_tokens": 1})).await;
    let v2 = chat(&router, json!({"model": "tiny-llama3", "tools": tools, "tool_choice": "none", "messages": turn2, "max_tokens": 1})).await;
    let (grown, base) = (v2["usage"]["prompt_tokens"].as_u64().unwrap(), none["usage"]["prompt_tokens"].as_u64().unwrap());
    let call_text = "{\"name\": \"get_weather\", \"parameters\": {\"unit\": \"c\"}}";
    assert!(grown >= base + (call_text.len() + "<|start_header_id|>ipython<|end_header_id|>".len() + "sunny, 21".len()) as u64, "{grown} vs {base}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistral_model_calls_tools_after_its_control_token() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_mistral(dir.path(), 11, MISTRAL_TEMPLATE, 2048);
    let router = serve(dir.path(), "tiny-mistral");
    let tools = weather_tool();
    let ask = json!([{"role": "user", "content": "Weather?"}]);
    let v = chat(&router, json!({"model": "tiny-mistral", "tools": tools, "tool_choice": "required", "messages": ask, "max_tokens": 100, "logprobs": true})).await;
    let c = &v["choices"][0];
    // The first token is the control token `[TOOL_CALLS]` (no text), then the list of calls.
    let tokens = c["logprobs"]["content"].as_array().unwrap();
    assert_eq!(tokens[0]["token"], "", "{v}");
    let raw = written(c);
    assert!(raw.trim_start().starts_with("[{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"") && raw.ends_with("}}]"), "{raw:?} in {v}");
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    let call = &c["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{v}");
    // Turn two: Shovel's own call id (`call_` and 32 hex digits) would make Mistral 7B's
    // template raise; it is given as 9 letters and digits, alike in the call and the result.
    let turn2 = json!([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call["id"], "type": "function", "function": call["function"]}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21"},
        {"role": "user", "content": "And tomorrow?"}
    ]);
    let none = chat(&router, json!({"model": "tiny-mistral", "messages": ask, "max_tokens": 1})).await;
    let v2 = chat(&router, json!({"model": "tiny-mistral", "tools": tools, "messages": turn2, "max_tokens": 1})).await;
    let (grown, base) = (v2["usage"]["prompt_tokens"].as_u64().unwrap(), none["usage"]["prompt_tokens"].as_u64().unwrap());
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    let call_text = format!("[{{\"name\": \"get_weather\", \"arguments\": {args}, \"id\": \"123456789\"}}]");
    let result_text = "{\"content\": \"sunny, 21\", \"call_id\": \"123456789\"}";
    assert!(grown >= base + (call_text.len() + result_text.len() + tools[0]["function"]["parameters"].to_string().len()) as u64, "{grown} vs {base}");
    auto_with_two_tools(&router, "tiny-mistral").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_mistral_model_calls_tools_by_name_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_mistral(dir.path(), 12, MISTRAL_ARGS_TEMPLATE, 2048);
    let router = serve(dir.path(), "tiny-magistral");
    let v = chat(
        &router,
        json!({"model": "tiny-magistral", "tools": weather_tool(), "tool_choice": "required", "messages": [{"role": "user", "content": "Weather?"}], "max_tokens": 100, "logprobs": true}),
    )
    .await;
    let c = &v["choices"][0];
    // `[TOOL_CALLS]`, the name, `[ARGS]`, the arguments: the two control tokens have no text.
    let tokens: Vec<&str> = c["logprobs"]["content"].as_array().unwrap().iter().map(|t| t["token"].as_str().unwrap()).collect();
    let name_end = 1 + "get_weather".len();
    assert!(tokens[0].is_empty() && tokens[1..name_end].concat() == "get_weather" && tokens[name_end].is_empty(), "{tokens:?}");
    assert!(tokens[name_end + 1..].concat().starts_with("{\"unit\": \""), "{tokens:?}");
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    let args: Value = serde_json::from_str(c["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["unit"] == "c" || args["unit"] == "f", "{args}");
    auto_with_two_tools(&router, "tiny-magistral").await;
}

/// `auto` with two tools and several calls allowed: the grammar (text that may not open a
/// call, or calls of either tool) compiles for the model's vocabulary, and the reply is text
/// or calls of those tools.
async fn auto_with_two_tools(router: &axum::Router, model: &str) {
    let mut tools = weather_tool();
    tools
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["utc", "local"]}}, "required": ["zone"]}}}));
    for seed in 0..3 {
        let v = chat(
            router,
            json!({"model": model, "tools": tools, "parallel_tool_calls": true, "messages": [{"role": "user", "content": "Weather and time?"}], "max_tokens": 60, "temperature": 1.0, "seed": seed}),
        )
        .await;
        let c = &v["choices"][0];
        match c["finish_reason"].as_str() {
            Some("tool_calls") => assert!(c["message"]["tool_calls"].as_array().unwrap().iter().all(|t| ["get_weather", "get_time"].contains(&t["function"]["name"].as_str().unwrap())), "{v}"),
            _ => assert!(c["message"]["content"].is_string() && c["message"]["tool_calls"].is_null(), "{v}"),
        }
    }
}
