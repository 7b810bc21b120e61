//! The OpenAI-compatible endpoints: models, chat completions and completions, streaming over
//! SSE or answered whole. Handlers submit validated requests to the `InferenceBackend` and turn
//! its events into OpenAI's JSON; usage comes from the engine's own counts.

use crate::dto::{ChatCompletionRequest, CommonDto, CompletionRequest, Plan};
use crate::error::ApiError;
use crate::extract::{from_value, ApiJson, PrincipalExt};
use crate::AppState;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};
use shovel_core::{BackendError, Event, EventStream, FinishReason, ModelId, TokenLogprob, ToolFormat, Usage};
use std::convert::Infallible;
use std::time::Instant;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// GET /v1/models
pub async fn list_models(State(st): State<AppState>, PrincipalExt(_p): PrincipalExt) -> Json<Value> {
    let data: Vec<Value> = st.backend.models().await.into_iter().map(|m| json!({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by, "kind": m.kind})).collect();
    Json(json!({"object": "list", "data": data}))
}

/// GET /v1/models/{id}
pub async fn get_model(State(st): State<AppState>, PrincipalExt(_p): PrincipalExt, axum::extract::Path(id): axum::extract::Path<String>) -> Result<Json<Value>, ApiError> {
    let m = st.backend.models().await.into_iter().find(|m| m.id.as_str() == id).ok_or_else(|| ApiError::from(BackendError::ModelNotFound { model: shovel_core::ModelId::new(id) }))?;
    Ok(Json(json!({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by, "kind": m.kind})))
}

/// Submits every request of a plan; if one fails, the others are dropped (and so cancelled).
async fn submit_all(st: &AppState, plan: &Plan) -> Result<Vec<EventStream>, ApiError> {
    let mut streams = Vec::with_capacity(plan.requests.len());
    for r in &plan.requests {
        streams.push(st.backend.submit(r.clone()).await?);
    }
    Ok(streams)
}

/// What one choice produced.
#[derive(Default)]
struct Choice {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<FinishReason>,
    usage: Usage,
}

async fn collect(mut rx: EventStream, first_token: &mut Option<Instant>) -> Result<Choice, ApiError> {
    let mut c = Choice::default();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Started { prompt_tokens } => c.usage.prompt_tokens = prompt_tokens,
            Event::Token { text, logprob, .. } => {
                first_token.get_or_insert_with(Instant::now);
                c.text.push_str(&text);
                c.logprobs.extend(logprob);
            }
            Event::Done { finish_reason, usage } => {
                c.finish = Some(finish_reason);
                c.usage = usage;
                return Ok(c);
            }
            Event::Error(e) => return Err(e.into()),
        }
    }
    Err(BackendError::Internal("generation ended without a result".into()).into())
}

fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            json!({
                "token": l.chosen.token, "logprob": l.chosen.logprob, "bytes": l.chosen.bytes,
                "top_logprobs": l.top.iter().map(|t| json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"content": content})
}

fn completion_logprobs(lps: &[TokenLogprob]) -> Value {
    let mut offset = 0;
    let mut offsets = Vec::new();
    for l in lps {
        offsets.push(offset);
        offset += l.chosen.token.len();
    }
    json!({
        "tokens": lps.iter().map(|l| l.chosen.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.chosen.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| l.top.iter().map(|t| (t.token.clone(), json!(t.logprob))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    /// The metrics label.
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Chat => "chat_completions",
            Kind::Completion => "completions",
        }
    }
}

/// Records a generation that finished: tokens, time to first token, duration and the 200.
fn record_done(st: &AppState, kind: Kind, model: &str, usage: Usage, first: Option<Instant>, start: Instant) {
    st.metrics.tokens(model, usage.prompt_tokens, usage.completion_tokens);
    if let Some(f) = first {
        st.metrics.ttft((f - start).as_secs_f64());
    }
    st.metrics.duration(start.elapsed().as_secs_f64());
    st.metrics.request(kind.endpoint(), 200);
}

/// Usage over all choices: each distinct prompt counted once (choices of one prompt share it).
fn total_usage(usages: &[Usage], n_per_prompt: usize) -> Usage {
    let mut u = Usage::default();
    for (i, x) in usages.iter().enumerate() {
        if i % n_per_prompt.max(1) == 0 {
            u.prompt_tokens += x.prompt_tokens;
            u.cached_tokens += x.cached_tokens;
        }
        u.completion_tokens += x.completion_tokens;
    }
    u
}

async fn respond(st: AppState, plan: Plan, model: String, kind: Kind, n_per_prompt: usize) -> Result<Response, ApiError> {
    let endpoint = kind.endpoint();
    let start = Instant::now();
    let streams = match submit_all(&st, &plan).await {
        Ok(s) => s,
        Err(e) => {
            st.metrics.request(endpoint, e.status.as_u16());
            return Err(e);
        }
    };
    let streams: Vec<EventStream> = match (&plan.tools, kind) {
        (Some(t), Kind::Chat) if t.parallel => streams.into_iter().map(crate::tools::end_at_repeated_call).collect(),
        _ => streams,
    };
    let id = format!("{}-{}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }, uuid::Uuid::new_v4().simple());
    if plan.stream {
        return Ok(stream(st, plan, streams, id, model, kind, n_per_prompt, start).into_response());
    }
    let mut first = None;
    let results = futures::future::join_all(streams.into_iter().map(|rx| {
        let mut f = None;
        async move {
            let r = collect(rx, &mut f).await;
            (r, f)
        }
    }))
    .await;
    let mut choices = Vec::new();
    let mut usages = Vec::new();
    for (i, (r, f)) in results.into_iter().enumerate() {
        let c = match r {
            Ok(c) => c,
            Err(e) => {
                st.metrics.request(endpoint, e.status.as_u16());
                return Err(e);
            }
        };
        if let Some(f) = f {
            first = Some(first.map_or(f, |x: Instant| x.min(f)));
        }
        let finish = c.finish.map(FinishReason::as_str);
        let calls = tool_calls(&plan, c.finish, &c.text);
        choices.push(match kind {
            Kind::Chat if calls.is_some() => json!({
                "index": i, "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": calls},
                "logprobs": if plan.logprobs { chat_logprobs(&c.logprobs) } else { Value::Null },
                "finish_reason": "tool_calls",
            }),
            Kind::Chat => json!({
                "index": i, "message": {"role": "assistant", "content": c.text, "refusal": null},
                "logprobs": if plan.logprobs { chat_logprobs(&c.logprobs) } else { Value::Null },
                "finish_reason": finish,
            }),
            Kind::Completion => json!({
                "index": i, "text": c.text,
                "logprobs": if plan.logprobs { completion_logprobs(&c.logprobs) } else { Value::Null },
                "finish_reason": finish,
            }),
        });
        usages.push(c.usage);
    }
    let usage = total_usage(&usages, n_per_prompt);
    record_done(&st, kind, &model, usage, first, start);
    let object = if kind == Kind::Chat { "chat.completion" } else { "text_completion" };
    Ok(Json(json!({
        "id": id, "object": object, "created": now(), "model": model,
        "choices": choices, "usage": usage_json(usage), "system_fingerprint": "shovel",
    }))
    .into_response())
}

#[allow(clippy::too_many_arguments)]
fn stream(st: AppState, plan: Plan, streams: Vec<EventStream>, id: String, model: String, kind: Kind, n_per_prompt: usize, start: Instant) -> impl IntoResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let n = streams.len();
    let created = now();
    tokio::spawn(async move {
        let endpoint = kind.endpoint();
        let object = if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        let usage_field = if plan.include_usage { Some(Value::Null) } else { None };
        let chunk = |choice: Value| {
            let mut v = json!({"id": id, "object": object, "created": created, "model": model, "system_fingerprint": "shovel", "choices": [choice]});
            if let Some(u) = &usage_field {
                v["usage"] = u.clone();
            }
            SseEvent::default().data(v.to_string())
        };
        let mut merged = futures::stream::select_all(streams.into_iter().enumerate().map(|(i, rx)| UnboundedReceiverStream::new(rx).map(move |e| (i, e))));
        let mut usages = vec![Usage::default(); n];
        // With tools a reply is either text or a call, known only when it ends: it is held back
        // and sent whole.
        let mut held = vec![String::new(); n];
        let mut done = 0;
        let mut first = None;
        while let Some((i, ev)) = merged.next().await {
            let out = match ev {
                Event::Started { prompt_tokens } => {
                    usages[i].prompt_tokens = prompt_tokens;
                    match kind {
                        Kind::Chat => Some(chunk(json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))),
                        Kind::Completion => None,
                    }
                }
                Event::Token { text, .. } if kind == Kind::Chat && plan.tools.is_some() => {
                    first.get_or_insert_with(Instant::now);
                    held[i].push_str(&text);
                    None
                }
                Event::Token { text, logprob, .. } => {
                    first.get_or_insert_with(Instant::now);
                    let lps: Vec<TokenLogprob> = logprob.into_iter().collect();
                    Some(match kind {
                        Kind::Chat => chunk(json!({
                            "index": i, "delta": {"content": text},
                            "logprobs": if plan.logprobs { chat_logprobs(&lps) } else { Value::Null },
                            "finish_reason": null,
                        })),
                        Kind::Completion => chunk(json!({
                            "index": i, "text": text,
                            "logprobs": if plan.logprobs { completion_logprobs(&lps) } else { Value::Null },
                            "finish_reason": null,
                        })),
                    })
                }
                Event::Done { finish_reason, usage } if kind == Kind::Chat && plan.tools.is_some() => {
                    usages[i] = usage;
                    done += 1;
                    let text = std::mem::take(&mut held[i]);
                    let (delta, finish) = match tool_calls(&plan, Some(finish_reason), &text) {
                        Some(mut calls) => {
                            // A stream's call deltas carry their place in the list.
                            for (j, c) in calls.iter_mut().enumerate() {
                                c["index"] = json!(j);
                            }
                            (json!({"tool_calls": calls}), "tool_calls")
                        }
                        None => (json!({"content": text}), finish_reason.as_str()),
                    };
                    if tx.send(Ok(chunk(json!({"index": i, "delta": delta, "logprobs": null, "finish_reason": null})))).await.is_err() {
                        st.metrics.request(endpoint, 499);
                        return;
                    }
                    Some(chunk(json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": finish})))
                }
                Event::Done { finish_reason, usage } => {
                    usages[i] = usage;
                    done += 1;
                    Some(match kind {
                        Kind::Chat => chunk(json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": finish_reason.as_str()})),
                        Kind::Completion => chunk(json!({"index": i, "text": "", "logprobs": null, "finish_reason": finish_reason.as_str()})),
                    })
                }
                Event::Error(e) => {
                    let err = ApiError::from(e);
                    st.metrics.request(endpoint, err.status.as_u16());
                    let _ = tx.send(Ok(SseEvent::default().data(err.body().to_string()))).await;
                    return;
                }
            };
            if let Some(ev) = out {
                if tx.send(Ok(ev)).await.is_err() {
                    // The client went away: dropping `merged` cancels every choice in the engine.
                    st.metrics.request(endpoint, 499);
                    return;
                }
            }
            if done == n {
                break;
            }
        }
        let usage = total_usage(&usages, n_per_prompt);
        record_done(&st, kind, &model, usage, first, start);
        if plan.include_usage {
            let v = json!({"id": id, "object": object, "created": created, "model": model, "system_fingerprint": "shovel", "choices": [], "usage": usage_json(usage)});
            let _ = tx.send(Ok(SseEvent::default().data(v.to_string()))).await;
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

/// The tool call a finished reply makes, in OpenAI's shape, when the request had tools and the
/// reply (complete, not cut by `max_tokens`) is one.
fn tool_calls(plan: &Plan, finish: Option<FinishReason>, text: &str) -> Option<Vec<Value>> {
    let calls = plan.tools.as_ref().filter(|_| finish == Some(FinishReason::Stop))?.calls_in(text)?;
    Some(calls.into_iter().map(|(name, arguments)| json!({"id": format!("call_{}", uuid::Uuid::new_v4().simple()), "type": "function", "function": {"name": name, "arguments": arguments}})).collect())
}

/// POST /v1/chat/completions
pub async fn chat_completions(State(st): State<AppState>, PrincipalExt(_p): PrincipalExt, ApiJson(body): ApiJson<Value>) -> Result<Response, ApiError> {
    let _: CommonDto = from_value(&body)?;
    let req: ChatCompletionRequest = from_value(&body)?;
    let model = req.model.clone();
    let n = req.common.n.unwrap_or(1);
    // How this model writes tool calls decides how the conversation's calls are written.
    let format = if req.uses_tools() { st.backend.tool_format(&ModelId::new(&model)).await? } else { ToolFormat::Json };
    let plan = req.plan(format)?;
    respond(st, plan, model, Kind::Chat, n).await
}

/// POST /v1/completions
pub async fn completions(State(st): State<AppState>, PrincipalExt(_p): PrincipalExt, ApiJson(body): ApiJson<Value>) -> Result<Response, ApiError> {
    let _: CommonDto = from_value(&body)?;
    let req: CompletionRequest = from_value(&body)?;
    let model = req.model.clone();
    let n = req.common.n.unwrap_or(1);
    let plan = req.plan()?;
    respond(st, plan, model, Kind::Completion, n).await
}
