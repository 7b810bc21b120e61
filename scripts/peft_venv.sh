# Sourced by the benchmark scripts whose anchor runs on PyTorch (fine-tuning: PEFT; embeddings:
# transformers): makes sure $VENV (default .bench/peft-venv) holds torch, transformers, peft and
# gguf from PyPI (about 3 GB, installed on the first run).
VENV="${PEFT_VENV:-.bench/peft-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, transformers, peft, gguf' 2>/dev/null; then
  echo "== installing the anchor (torch, transformers, peft, gguf) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check torch transformers peft gguf
fi
