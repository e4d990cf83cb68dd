#!/usr/bin/env bash
# Install ser into the current Python (a venv if one is active).
#   ./setup.sh        the tool
#   ./setup.sh test   the tool and the test dependencies
# torch is pinned (2.13.0) and installed first, so that a machine without a GPU takes the local
# CPU wheel instead of pulling a multi-GB CUDA build; set TORCH_INDEX_URL to choose another
# index for it. torchaudio is never installed: soundfile reads audio, soxr resamples it.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '2.13.0' else 1)" 2>/dev/null; then
  echo "torch 2.13.0 already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "GPU found: installing torch 2.13.0 (CUDA build)"
  "${PIP[@]}" "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
else
  echo "no GPU found: installing the CPU build of torch 2.13.0"
  "${PIP[@]}" "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi

# A torchaudio built against another torch fails to import and then breaks `import transformers`.
if "$PY" -m pip show -q torchaudio >/dev/null 2>&1 && ! "$PY" -c "import torchaudio" >/dev/null 2>&1; then
  echo "removing a torchaudio that cannot import next to this torch (it would break transformers)"
  "$PY" -m pip uninstall -y -q torchaudio
fi

# faiss-cpu and faiss-gpu provide the same module: keep whichever is there, else the light one.
if ! "$PY" -c "import faiss" >/dev/null 2>&1; then
  "${PIP[@]}" faiss-cpu
fi

if [ "${1:-}" = "test" ]; then
  "${PIP[@]}" -e ".[test]"
else
  "${PIP[@]}" -e .
fi
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
echo "ser installed: $("$PY" -c 'import featstore; print(featstore.__version__)')"
