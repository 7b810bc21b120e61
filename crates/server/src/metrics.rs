//! Prometheus metrics, named `shovel_<noun>_<unit>`, rendered in the text exposition format at
//! GET /metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    prompt_tokens: BTreeMap<String, u64>,
    completion_tokens: BTreeMap<String, u64>,
    ttft_sum: f64,
    ttft_count: u64,
    duration_sum: f64,
    duration_count: u64,
}

/// Server-wide counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, endpoint: &str, status: u16) {
        *self.inner.lock().unwrap().requests.entry((endpoint.to_string(), status)).or_default() += 1;
    }

    /// Records token usage for a model.
    pub fn tokens(&self, model: &str, prompt: usize, completion: usize) {
        let mut i = self.inner.lock().unwrap();
        *i.prompt_tokens.entry(model.to_string()).or_default() += prompt as u64;
        *i.completion_tokens.entry(model.to_string()).or_default() += completion as u64;
    }

    /// Records the time to the first generated token.
    pub fn ttft(&self, secs: f64) {
        let mut i = self.inner.lock().unwrap();
        i.ttft_sum += secs;
        i.ttft_count += 1;
    }

    /// Records a generation's total duration.
    pub fn duration(&self, secs: f64) {
        let mut i = self.inner.lock().unwrap();
        i.duration_sum += secs;
        i.duration_count += 1;
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let i = self.inner.lock().unwrap();
        let mut s = String::new();
        let _ = writeln!(s, "# HELP shovel_requests_total API requests by endpoint and status.\n# TYPE shovel_requests_total counter");
        for ((e, st), v) in &i.requests {
            let _ = writeln!(s, "shovel_requests_total{{endpoint=\"{e}\",status=\"{st}\"}} {v}");
        }
        let _ = writeln!(s, "# HELP shovel_prompt_tokens_total Prompt tokens processed.\n# TYPE shovel_prompt_tokens_total counter");
        for (m, v) in &i.prompt_tokens {
            let _ = writeln!(s, "shovel_prompt_tokens_total{{model=\"{m}\"}} {v}");
        }
        let _ = writeln!(s, "# HELP shovel_completion_tokens_total Tokens generated.\n# TYPE shovel_completion_tokens_total counter");
        for (m, v) in &i.completion_tokens {
            let _ = writeln!(s, "shovel_completion_tokens_total{{model=\"{m}\"}} {v}");
        }
        let _ = writeln!(s, "# HELP shovel_time_to_first_token_seconds Time from request to first token.\n# TYPE shovel_time_to_first_token_seconds summary");
        let _ = writeln!(s, "shovel_time_to_first_token_seconds_sum {}\nshovel_time_to_first_token_seconds_count {}", i.ttft_sum, i.ttft_count);
        let _ = writeln!(s, "# HELP shovel_generation_duration_seconds Time from request to last token.\n# TYPE shovel_generation_duration_seconds summary");
        let _ = writeln!(s, "shovel_generation_duration_seconds_sum {}\nshovel_generation_duration_seconds_count {}", i.duration_sum, i.duration_count);
        s
    }
}
