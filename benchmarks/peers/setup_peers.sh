#!/usr/bin/env bash
# Idempotent set-up of the peer-library venv (SAELens, EleutherAI sparsify) used by the
# benchmarks/peers runners. torch is installed first and then pinned with a constraints file so
# that no peer dependency can replace it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(dirname "$here")/.venv-peers"
torch_version="2.13.0"

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" >"$constraints"

"$py" -m pip install --quiet "torch==$torch_version"
"$py" -m pip install --quiet -c "$constraints" "sae-lens==6.54.12" "eai-sparsify==1.3.3" safetensors numpy  # the versions RESULTS.md names

"$py" - "$torch_version" <<'PY'
import sys
from importlib.metadata import version

import torch

want = sys.argv[1] + "+cpu"
assert torch.__version__ == want, f"torch is {torch.__version__}, expected {want}"
for name in ("torch", "sae-lens", "eai-sparsify", "safetensors", "numpy"):
    print(f"{name}=={version(name)}")
PY
