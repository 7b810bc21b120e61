//! Token sampling: penalties, then temperature, top-k, top-p and min-p, then a seeded draw; or
//! argmax when the temperature is 0. Log probabilities are reported from the model's raw
//! distribution, before any filter, as OpenAI does.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shovel_core::SamplingParams;
use std::collections::HashMap;

/// Tokens the repetition penalty looks back over (llama.cpp's default `penalty_last_n`).
const PENALTY_LAST_N: usize = 64;

/// Per-sequence sampler state.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Counts of generated tokens, for frequency and presence penalties.
    counts: HashMap<u32, usize>,
}

/// Log-softmax of the best `k` tokens, best first, plus the chosen token's.
pub fn top_logprobs(logits: &[f32], chosen: u32, k: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(logits.len());
    if k > 0 {
        idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        idx.truncate(k);
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    } else {
        idx.clear();
    }
    (logits[chosen as usize] - lse, idx.into_iter().map(|i| (i, logits[i as usize] - lse)).collect())
}

impl Sampler {
    /// A sampler; with no seed it draws one from the OS.
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(rand::random);
        Sampler { params, rng: ChaCha8Rng::seed_from_u64(seed), counts: HashMap::new() }
    }

    /// Picks the next token. `recent` is the sequence so far (prompt and output), for the
    /// repetition penalty. `logits` is modified.
    pub fn sample(&mut self, logits: &mut [f32], recent: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let start = recent.len().saturating_sub(PENALTY_LAST_N);
            let mut seen: Vec<u32> = recent[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                }
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (&t, &c) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= c as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
        }
        let tok = if p.temperature <= 0.0 { argmax(logits) } else { self.draw(logits) };
        *self.counts.entry(tok).or_default() += 1;
        tok
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Unnormalised probabilities at this temperature, in vocabulary order. The vector exp:
        // libm's scalar expf over the vocabulary was 2.6% of serving 8 sampled streams (perf).
        let mut w: Vec<f32> = logits.iter().map(|&l| (l - max) * inv_t).collect();
        crate::ops::exp_in_place(&mut w);
        let total: f32 = w.iter().sum();
        if p.top_k == 0 && p.top_p >= 1.0 && p.min_p <= 0.0 {
            // No filter: one scan, no sort (a full sort of Gemma's 262k vocabulary costs ~20 ms).
            let mut r = self.rng.gen::<f32>() * total;
            for (i, &x) in w.iter().enumerate() {
                r -= x;
                if r <= 0.0 {
                    return i as u32;
                }
            }
            return argmax(logits);
        }
        // Candidates best first; only as many are ordered as the filters can need, growing the
        // ordered prefix until it holds the top_p mass.
        let by_weight = |a: &u32, b: &u32| w[*b as usize].total_cmp(&w[*a as usize]).then(a.cmp(b));
        let mut cand: Vec<u32> = (0..w.len() as u32).collect();
        let limit = if p.top_k > 0 { p.top_k.min(cand.len()) } else { cand.len() };
        let mut k = limit.min(64);
        loop {
            if k < cand.len() {
                cand.select_nth_unstable_by(k - 1, by_weight);
            }
            cand[..k].sort_by(by_weight);
            let mass: f32 = cand[..k].iter().map(|&i| w[i as usize]).sum::<f32>() / total;
            if k == limit || (p.top_k == 0 && mass >= p.top_p) {
                break;
            }
            k = (k * 4).min(limit);
        }
        cand.truncate(k);
        // Probabilities among the top-k candidates, as before any further filter.
        let sum_k: f32 = cand.iter().map(|&i| w[i as usize]).sum();
        let probs: Vec<f32> = cand.iter().map(|&i| w[i as usize] / sum_k).collect();
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, &pr) in probs.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            keep = keep.min(probs.iter().take_while(|&&x| x >= floor).count().max(1));
        }
        let kept: f32 = probs[..keep].iter().sum();
        let mut r = self.rng.gen::<f32>() * kept;
        for i in 0..keep {
            r -= probs[i];
            if r <= 0.0 {
                return cand[i];
            }
        }
        cand[keep - 1]
    }
}

/// Index of the largest logit (lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams { seed: Some(7), ..Default::default() };
        f(&mut p);
        p
    }

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(params(|p| p.temperature = 0.0));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_temperature() {
        let mut s = Sampler::new(params(|p| {
            p.temperature = 5.0;
            p.top_k = 1;
        }));
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0], &[]), 1);
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let draw = || {
            let mut s = Sampler::new(params(|p| p.temperature = 1.0));
            (0..16).map(|_| s.sample(&mut [1.0, 1.1, 0.9, 1.05], &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }

    #[test]
    fn top_p_keeps_only_the_nucleus_even_in_a_large_vocabulary() {
        // Two tokens hold ~all the mass among 100k; top_p 0.9 must never pick the rest, and
        // must pick both of the two.
        let mut logits = vec![0.0f32; 100_000];
        logits[77] = 20.0;
        logits[99_000] = 20.0;
        let mut s = Sampler::new(params(|p| p.top_p = 0.9));
        let picks: std::collections::HashSet<u32> = (0..64).map(|_| s.sample(&mut logits.clone(), &[])).collect();
        assert_eq!(picks, [77, 99_000].into_iter().collect());
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let mut s = Sampler::new(params(|p| p.min_p = 0.5));
        for _ in 0..50 {
            assert_ne!(s.sample(&mut [5.0, 0.0, 5.0, -3.0], &[]), 1);
        }
    }

    #[test]
    fn repetition_penalty_discourages_recent_tokens() {
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.repetition_penalty = 2.0;
        }));
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0]), 1);
    }

    #[test]
    fn presence_penalty_counts_own_output() {
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.presence_penalty = 1.0;
        }));
        assert_eq!(s.sample(&mut [2.0, 1.5], &[]), 0);
        assert_eq!(s.sample(&mut [2.0, 1.5], &[]), 1);
    }

    #[test]
    fn logprobs_are_normalised_and_sorted() {
        let (lp, top) = top_logprobs(&[0.0, 1.0, 2.0], 0, 2);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 1]);
        let total: f32 = [0.0f32, 1.0, 2.0].iter().map(|l| (l - 2.0f32).exp()).sum();
        assert!((top[0].1 - (1.0 / total).ln()).abs() < 1e-5);
        assert!(lp < top[1].1);
    }
}
