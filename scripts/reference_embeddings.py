"""Writes tests/reference/all-minilm-l6-v2.embeddings.jsonl: sentence embeddings of a few texts
computed by Hugging Face transformers (PyTorch, fp32) the way sentence-transformers computes them
for all-MiniLM-L6-v2 (its modules.json: BERT, mean pooling over the attention mask, L2 normalise).

Needs torch and transformers (e.g. the PEFT anchor's venv from scripts/bench_train.sh):
    .bench/peft-venv/bin/python scripts/reference_embeddings.py $SHOVEL_HOME/models/all-minilm-l6-v2/model
"""

import json
import pathlib
import sys

import torch
from transformers import AutoModel, AutoTokenizer

TEXTS = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by 12 percent in North China.",
    "华北地区2019年3-5月的销售额,用折线图来表示",
    "Hello!",
    "Shovel serves its built-in model, imported open models and third-party endpoints through one "
    "OpenAI-compatible API, and gives a company the toolchain to fine-tune its own model: datasets, "
    "LoRA fine-tuning, evaluation, deployment, hosting, usage and cost.",
]


def main():
    model_dir = sys.argv[1]
    out = pathlib.Path(__file__).resolve().parent.parent / "tests/reference/all-minilm-l6-v2.embeddings.jsonl"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad(), out.open("w") as f:
        for text in TEXTS:
            enc = tok(text, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            emb = torch.nn.functional.normalize(pooled, dim=-1)[0]
            ids = enc["input_ids"][0].tolist()
            f.write(json.dumps({"text": text, "ids": ids, "embedding": [round(v, 6) for v in emb.tolist()]}, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
