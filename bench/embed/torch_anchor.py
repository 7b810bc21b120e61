"""The embedding anchor: all-MiniLM-L6-v2 in PyTorch + transformers (fp32), pooled the way
sentence-transformers pools it (mean over the attention mask, L2 normalised), on the same token
ids `shovel bench` encodes. Prints {"batch1": texts/s, "batch32": texts/s} as JSON."""

import json
import random
import sys
import time

import torch
from transformers import AutoModel


def main():
    model_dir, threads, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(model_dir).eval()
    rng = random.Random(0)
    # [CLS] + random word pieces + [SEP], as the Shovel measure builds them.
    ids = [[101] + [rng.randrange(1000, 30000) for _ in range(tokens - 2)] + [102] for _ in range(256)]

    def run(batch, texts):
        t0 = time.time()
        with torch.no_grad():
            for i in range(0, texts, batch):
                x = torch.tensor(ids[i : i + batch])
                mask = torch.ones_like(x)
                h = model(input_ids=x, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).float()
                torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        return texts / (time.time() - t0)

    run(32, 32)
    print(json.dumps({"batch1": run(1, 64), "batch32": run(32, 256)}))


if __name__ == "__main__":
    main()
