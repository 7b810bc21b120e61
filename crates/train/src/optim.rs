//! AdamW (decoupled weight decay, as `torch.optim.AdamW`) with global-norm gradient clipping,
//! and the linear-warmup + cosine-decay schedule of `transformers`' `get_cosine_schedule_with_warmup`.

use shovel_engine::lora::Adapter;

/// AdamW's moment estimates, shaped like the adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    /// First moments.
    pub m: Adapter,
    /// Second moments.
    pub v: Adapter,
    /// Updates applied so far.
    pub t: u64,
}

/// AdamW settings.
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    /// `beta1`.
    pub beta1: f32,
    /// `beta2`.
    pub beta2: f32,
    /// `eps`.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

fn params_mut(a: &mut Adapter) -> impl Iterator<Item = &mut Vec<f32>> {
    a.layers.iter_mut().flatten().flatten().flat_map(|p| [&mut p.a, &mut p.b])
}

fn params(a: &Adapter) -> impl Iterator<Item = &Vec<f32>> {
    a.layers.iter().flatten().flatten().flat_map(|p| [&p.a, &p.b])
}

/// `acc += g`, parameter by parameter.
pub fn add_into(acc: &mut Adapter, g: &Adapter) {
    for (a, b) in params_mut(acc).zip(params(g)) {
        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    }
}

/// The gradients' global L2 norm.
pub fn grad_norm(g: &Adapter) -> f32 {
    params(g).flat_map(|v| v.iter()).map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt() as f32
}

impl AdamW {
    /// Zeroed moments for `a`.
    pub fn new(a: &Adapter) -> Self {
        AdamW { m: crate::model::zero_grads(a), v: crate::model::zero_grads(a), t: 0 }
    }

    /// One update of `p` with gradients `g` (clipped to global norm `clip` when `clip > 0`) at
    /// learning rate `lr`. Returns the gradient norm before clipping.
    pub fn step(&mut self, p: &mut Adapter, g: &Adapter, lr: f32, clip: f32, cfg: AdamWConfig) -> f32 {
        let norm = grad_norm(g);
        let gs = if clip > 0.0 && norm > clip { clip / (norm + 1e-6) } else { 1.0 };
        self.t += 1;
        let bc1 = 1.0 - cfg.beta1.powi(self.t as i32);
        let bc2 = 1.0 - cfg.beta2.powi(self.t as i32);
        let step = lr / bc1;
        for (((pv, gv), mv), vv) in params_mut(p).zip(params(g)).zip(params_mut(&mut self.m)).zip(params_mut(&mut self.v)) {
            for i in 0..pv.len() {
                let gi = gv[i] * gs;
                mv[i] = cfg.beta1 * mv[i] + (1.0 - cfg.beta1) * gi;
                vv[i] = cfg.beta2 * vv[i] + (1.0 - cfg.beta2) * gi * gi;
                pv[i] *= 1.0 - lr * cfg.weight_decay;
                pv[i] -= step * mv[i] / ((vv[i] / bc2).sqrt() + cfg.eps);
            }
        }
        norm
    }
}

/// Learning rate at `step` (0-based) of `total`, with `warmup` warm-up steps.
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f32) -> f32 {
    if step < warmup {
        return peak * step as f32 / warmup.max(1) as f32;
    }
    let progress = (step - warmup) as f32 / (total - warmup).max(1) as f32;
    peak * 0.5 * (1.0 + (std::f32::consts::PI * progress.min(1.0)).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(lr_at(0, 100, 10, 1.0), 0.0);
        assert!((lr_at(5, 100, 10, 1.0) - 0.5).abs() < 1e-6);
        assert!((lr_at(10, 100, 10, 1.0) - 1.0).abs() < 1e-6);
        assert!((lr_at(55, 100, 10, 1.0) - 0.5).abs() < 1e-6);
        assert!(lr_at(100, 100, 10, 1.0).abs() < 1e-6);
        // No warm-up: the first step runs at the peak.
        assert_eq!(lr_at(0, 10, 0, 2.0), 2.0);
    }
}
