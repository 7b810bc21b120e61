"""The fine-tuning anchor: PyTorch + transformers + PEFT LoRA in fp32 on the same GGUF model and
data as `shovel tune`, with the same recipe (r, alpha, the seven projections, batch, max length,
epochs, AdamW, warmup + cosine, clipping 1.0, loss on assistant tokens only).

Prints one JSON line: tokens/s (non-padding tokens per second of the training loop), loop and
whole-process seconds, peak RSS, the loss per step and the validation loss.

Usage: python peft_anchor.py MODEL.gguf TRAIN.jsonl [VALID.jsonl] [--epochs 3 --batch 4 --max-len 256
       --lr 1e-3 --r 16 --alpha 32 --threads 2 --seed 42 --save DIR]

--save writes the trained adapter in PEFT's layout (adapter_config.json +
adapter_model.safetensors), which `shovel import DIR --base MODEL` serves.

--order FILE (a JSON list per epoch of example indices) and --init DIR (an adapter in PEFT's
layout to start from) replay another trainer's data order and starting values
(bench/train/replay.py gives `shovel tune`'s), so the losses can be compared step by step.
"""
import argparse
import json
import math
import os
import resource
import time

T0 = time.time()

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup  # noqa: E402


def encode(tok, ex, max_len):
    """Tokens and labels (-100 outside assistant turns), as Shovel's trainer builds them."""
    msgs = ex["messages"]
    ids, labels, prev = [], [], ""
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prompt = tok.apply_chat_template(msgs[:i], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(msgs[: i + 1], tokenize=False)
        p = tok(prompt[len(prev):], add_special_tokens=False)["input_ids"]
        a = tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
        ids += p + a
        labels += [-100] * len(p) + a
        prev = full
    return ids[:max_len], labels[:max_len]


def batches(data, order, bs):
    for i in range(0, len(order), bs):
        yield [data[j] for j in order[i:i + bs]]


def collate(batch, pad):
    n = max(len(x[0]) for x in batch)
    ids = torch.full((len(batch), n), pad, dtype=torch.long)
    lab = torch.full((len(batch), n), -100, dtype=torch.long)
    att = torch.zeros((len(batch), n), dtype=torch.long)
    for r, (a, b) in enumerate(batch):
        ids[r, : len(a)] = torch.tensor(a)
        lab[r, : len(b)] = torch.tensor(b)
        att[r, : len(a)] = 1
    return ids, lab, att


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("train")
    ap.add_argument("valid", nargs="?")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--save", help="directory to write the adapter to (PEFT layout)")
    ap.add_argument("--order", help="JSON file: the example order of each epoch (default: torch.randperm)")
    ap.add_argument("--init", help="adapter directory (PEFT layout) with the starting values of A and B")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    d, f = os.path.split(os.path.abspath(a.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    cfg = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    if a.init:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file
        res = set_peft_model_state_dict(model, load_file(os.path.join(a.init, "adapter_model.safetensors")))
        missing = [k for k in res.missing_keys if "lora_" in k]
        assert not missing and not res.unexpected_keys, (missing[:3], res.unexpected_keys[:3])
    orders = json.load(open(a.order)) if a.order else None
    load = lambda p: [json.loads(x) for x in open(p, encoding="utf-8") if x.strip()]  # noqa: E731
    train = [encode(tok, ex, a.max_len) for ex in load(a.train)]
    valid = [encode(tok, ex, a.max_len) for ex in load(a.valid)] if a.valid else []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    steps = math.ceil(len(train) / a.batch) * a.epochs
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(0.05 * steps), steps)
    g = torch.Generator().manual_seed(a.seed)
    losses, tokens = [], 0
    model.train()
    t_loop = time.time()
    for e in range(a.epochs):
        order = orders[e] if orders else torch.randperm(len(train), generator=g).tolist()
        for batch in batches(train, order, a.batch):
            ids, lab, att = collate(batch, pad)
            out = model(input_ids=ids, attention_mask=att, labels=lab)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(out.loss.item())
            tokens += int(att.sum())
    loop_s = time.time() - t_loop
    if a.save:
        model.save_pretrained(a.save)
    model.eval()
    vl, vn = 0.0, 0
    with torch.no_grad():
        for ids, labels in valid:
            x = torch.tensor([ids])
            y = torch.tensor([labels])
            out = model(input_ids=x, labels=y)
            n = int((y[0, 1:] != -100).sum())
            vl += out.loss.item() * n
            vn += n
    print(json.dumps({
        "tokens_per_s": tokens / loop_s, "train_tokens": tokens, "loop_s": loop_s, "total_s": time.time() - T0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "steps": len(losses),
        "final_loss": losses[-1], "valid_loss": vl / vn if vn else None, "losses": losses,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
