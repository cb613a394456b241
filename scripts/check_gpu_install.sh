#!/usr/bin/env bash
# Does `pip install -e .[gpu] -c constraints-gpu.txt` resolve for a CUDA machine (Linux x86_64, glibc 2.35 as on Ubuntu 22.04, Python
# 3.11)? A dry run with a report, from any machine with PyPI access (no GPU needed; nothing is installed). Prints what
# would be installed for the packages that matter and fails if torch, vLLM and transformers do not fit together, or if
# the CUDA builds do not share one major version (torch's nvidia-* wheels against vLLM's wheel, which links
# libcudart.so.13 in 0.32.0: it needs an NVIDIA driver of release 580 or newer).
#
#   bash scripts/check_gpu_install.sh              # writes the full report to gpu-install-report.json
#   PYTHON_VERSION=3.10 GLIBC_MINOR=28 bash scripts/check_gpu_install.sh   # another Python, an older glibc
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
REPORT="${REPORT:-$REPO/gpu-install-report.json}"
PY_VERSION="${PYTHON_VERSION:-3.11}"
# The project's own requirements (pyproject: dependencies + the gpu extra), resolved as wheels for the target
# platform: pip cannot build the project itself for another platform, and it needs no build. deepspeed (source
# only on PyPI) is left out: see below.
REQS="$(mktemp)"
"$PYTHON" - "$REPO/pyproject.toml" > "$REQS" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
# deepspeed is published as a source distribution only, which a dry run for another platform cannot take; it
# is pure Python at install time (its kernels build on first use), so it is left out here
extras = project["optional-dependencies"]
gpu = []
for r in extras["gpu"]:  # "mm-gmpo[deepspeed,lora]": the project's own extras, spelled out
    gpu += [x for e in r[r.index("[") + 1 : -1].split(",") for x in extras[e]] if r.startswith("mm-gmpo[") else [r]
reqs = [r for r in project["dependencies"] + gpu if not r.startswith("deepspeed")]
print("\n".join(reqs))
PY
echo "== resolving for manylinux_2_${GLIBC_MINOR:-35} x86_64, Python $PY_VERSION:"; sed 's/^/   /' "$REQS"
TARGET="$(mktemp -d)"
# every manylinux tag a glibc 2.NN machine accepts (pip does not widen one --platform to the older ones)
PLATFORMS=""
for minor in $(seq "${GLIBC_MINOR:-35}" -1 17); do PLATFORMS="$PLATFORMS --platform manylinux_2_${minor}_x86_64"; done
PLATFORMS="$PLATFORMS --platform manylinux2014_x86_64"
# PyPI only, as on a user's machine: no local wheel folders or caps from the local pip configuration
env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
    "$PYTHON" -m pip install --dry-run --quiet --quiet --ignore-installed --report "$REPORT" --target "$TARGET" \
    --python-version "$PY_VERSION" --implementation cp $PLATFORMS \
    --only-binary=:all: -r "$REQS" -c "$REPO/constraints-gpu.txt"
"$PYTHON" - "$REPORT" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
found = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
for name in ("torch", "vllm", "transformers", "torchvision", "flash-attn", "xformers", "peft"):
    print(f"   {name:14s} {found.get(name, '-')}")
print(f"   ({len(found)} packages in all, {sum(n.startswith('nvidia-') for n in found)} nvidia-*)")
def version(name):
    return tuple(int(x) for x in found[name].split("+")[0].split(".")[:2])
import re
# The vLLM wheel's CUDA major: PyPI's vllm 0.32.0 is a CUDA 13 build (its extension links libcudart.so.13); the
# metadata does not say it, so it is stated here for the version the gpu extra pins.
VLLM_WHEEL_CUDA = {(0, 32): 13}
# The CUDA major of a wheel: its -cuNN suffix (nvidia-cudnn-cu13, nvidia-nccl-cu13, ...) or, for the libraries
# versioned with the toolkit, its version's major (nvidia-cuda-runtime 13.x, nvidia-cublas 13.x, ...). cuFFT, cuRAND,
# cuSOLVER and cuSPARSE carry versions of their own (cuFFT 12.x ships with CUDA 13), and nvidia-cutlass-dsl ships
# libraries for CUDA 12 and 13 side by side by design: they are not counted.
TOOLKIT_VERSIONED = ("nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-cublas", "nvidia-nvjitlink")
majors = {}
for name, ver in found.items():
    suffix = re.search(r"^nvidia-.*-cu(\d+)$", name)
    if suffix and not name.startswith("nvidia-cutlass-dsl"):
        majors[name] = int(suffix.group(1))
    elif name in TOOLKIT_VERSIONED or any(name == f"{t}-cu{v}" for t in TOOLKIT_VERSIONED for v in (12, 13)):
        majors[name] = int(ver.split(".")[0])
if "+cpu" in found.get("torch", ""):
    majors["torch (a CPU build: a local wheel was picked)"] = 0
cuda = sorted(set(majors.values()))
vllm_cuda = VLLM_WHEEL_CUDA.get(version("vllm"))
print(f"   CUDA major of the nvidia-* wheels: {cuda or '-'}; of the vLLM wheel: {vllm_cuda or 'unknown'}")
one_cuda = len(cuda) == 1 and vllm_cuda in cuda
if not one_cuda:
    print("   CUDA builds differ: " + ", ".join(f"{n} {majors[n]}" for n in sorted(majors)))
ok = version("torch") == (2, 13) and version("vllm") == (0, 32) and version("transformers") < (5, 20) and one_cuda
print("GPU install resolves: " + ("PASSED" if ok else "FAILED (see the report)"))
sys.exit(0 if ok else 1)
PY
