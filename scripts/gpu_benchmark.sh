#!/usr/bin/env bash
# The GPU path's figures (issue 27: the benchmark on CUDA, the first and warm runs too), for a machine with an NVIDIA
# GPU and no network whose python3 already holds PyTorch with CUDA, numpy, scipy and onnxruntime but not SimpleITK
# (the device machines lent to some sessions; docs/profile.md). SimpleITK travels there as a wheel:
#
#   bash scripts/gpu_benchmark.sh prepare   # here, with PyPI: SimpleITK's wheel (the version .venv/ has) into .whl/
#   bash scripts/gpu_benchmark.sh run       # there, with .whl/ carried: installs it into /tmp/site, then benchmarks
#
# PYTHON (default python3) is the interpreter of each step; PYTHON_VERSION (default 3.12, the device machines')
# the Python the wheel is downloaded for. `run` prints the GPU, then `gastric-propagate benchmark` (speed: CPU and
# CUDA, one volume and click to segment written; accuracy on 10 held-out phantoms with the networks on the GPU), and
# writes it to $OUT/gpu-benchmark.txt when OUT is set. The wheel is 53 MB: with the repository (12 MB) it stays
# under the 64 MiB a device call carries. About 3 minutes on 16 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
case "${1:-}" in
prepare)
    version=$(.venv/bin/python -c "import SimpleITK; print(SimpleITK.__version__)")
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        "SimpleITK==$version"
    ;;
run)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD/GastricPropagate${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: no GPU seen"
    "$PYTHON" -m gastric_propagate.cli benchmark --skip corrections --cases 10 --repeats 5 \
        | tee "${OUT:-/tmp}/gpu-benchmark.txt"
    ;;
*)
    echo "usage: bash scripts/gpu_benchmark.sh prepare|run" >&2
    exit 2
    ;;
esac
