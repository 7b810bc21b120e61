//! `shovel run` and `shovel chat`: the engine driven straight from the terminal, streaming
//! tokens as they come.

use anyhow::{anyhow, Result};
use shovel_core::{ChatMessage, Event, GenerateRequest, InferenceBackend, ModelId, Prompt, SamplingParams};
use shovel_engine::Engine;
use std::io::{BufRead, Write};

/// Generation flags shared by `run` and `chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct GenOpts {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue the prompt as raw text, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// System message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
}

impl GenOpts {
    fn request(&self, model: &ModelId, prompt: Prompt) -> GenerateRequest {
        GenerateRequest {
            model: model.clone(),
            prompt,
            sampling: SamplingParams { temperature: self.temperature, top_p: self.top_p, seed: self.seed, ..Default::default() },
            max_tokens: Some(self.max_tokens),
            stop: vec![],
            top_logprobs: None,
            constraint: None,
        }
    }
}

/// Streams one generation to stdout; returns the text.
async fn stream(engine: &Engine, req: GenerateRequest) -> Result<String> {
    let mut rx = engine.submit(req).await.map_err(|e| anyhow!("{e}"))?;
    let mut out = std::io::stdout();
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Started { .. } => {}
            Event::Token { text: t, .. } => {
                print!("{t}");
                out.flush()?;
                text.push_str(&t);
            }
            Event::Done { .. } => break,
            Event::Error(e) => return Err(anyhow!("{e}")),
        }
    }
    println!();
    Ok(text)
}

/// `shovel run`.
pub async fn run_once(engine: &Engine, model: &ModelId, prompt: &str, opts: &GenOpts) -> Result<()> {
    let p = if opts.raw {
        Prompt::Text(prompt.to_string())
    } else {
        let mut msgs: Vec<ChatMessage> = opts.system.iter().map(|s| ChatMessage::new("system", s.clone())).collect();
        msgs.push(ChatMessage::new("user", prompt.to_string()));
        Prompt::Chat(msgs)
    };
    stream(engine, opts.request(model, p)).await.map(|_| ())
}

/// `shovel chat`: a REPL keeping the conversation.
pub async fn chat(engine: &Engine, model: &ModelId, opts: &GenOpts) -> Result<()> {
    let base: Vec<ChatMessage> = opts.system.clone().map(|s| ChatMessage::new("system", s)).into_iter().collect();
    let mut history = base.clone();
    eprintln!("chatting with {model}; /reset clears the conversation, /exit (or Ctrl-D) quits");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                history = base.clone();
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new("user", line.to_string()));
        let reply = stream(engine, opts.request(model, Prompt::Chat(history.clone()))).await?;
        history.push(ChatMessage::new("assistant", reply));
    }
}
