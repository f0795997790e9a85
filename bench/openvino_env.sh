#!/usr/bin/env bash
# A second virtual environment whose onnxruntime is PyPI's onnxruntime-openvino, for
# tests/vision/test_openvino.py and bench/bench_providers.py:
#
#   bash bench/openvino_env.sh [VENV_DIR]     # default: .venv-openvino beside the code
#
# Why a venv of its own: onnxruntime-openvino ships the same `onnxruntime` module as the plain
# package (with the OpenVINO execution provider and OpenVINO's CPU plugin built in), so the two
# cannot live in one environment; installing it into .venv would silently replace the runtime every
# other test measures. The project goes in with --no-deps and its other runtime dependencies are
# installed from pyproject.toml minus onnxruntime, so nothing can pull the plain package back in.
#
# ONNXRUNTIME_OPENVINO_VERSION pins the wheel (default below: the newest one for CPython 3.11 on
# x86-64 Linux when this was written; it exposes the onnxruntime API of the plain package we use).
# Running the script again on an existing venv only brings it up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${1:-.venv-openvino}"
version="${ONNXRUNTIME_OPENVINO_VERSION:-1.24.1}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null

# The project's runtime dependencies except onnxruntime, read from pyproject.toml (tomllib: 3.11+).
mapfile -t deps < <(python3 - <<'EOF'
import re
import tomllib

with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    if re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() != "onnxruntime":
        print(dep)
EOF
)
"$venv/bin/python" -m pip install -q "onnxruntime-openvino==$version" "${deps[@]}"
"$venv/bin/python" -m pip install -q --no-deps -e .

# Fail here, not in a test, if the wheel does not bring its provider (or the plain package got in).
"$venv/bin/python" - <<'EOF'
import onnxruntime as ort

providers = ort.get_available_providers()
if "OpenVINOExecutionProvider" not in providers:
    raise SystemExit(f"onnxruntime {ort.__version__} in this venv has no OpenVINO provider: {providers}")
print(f"openvino env ready: onnxruntime {ort.__version__}, providers {providers}")
EOF
