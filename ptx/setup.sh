#!/usr/bin/env bash
# Install the pinned kernel toolchain (ptx/requirements.txt: NVRTC 12.4, CUDA 12.4 headers, ptxas 12.4) into a venv
# that ptx/build_ptx.py finds: $ENGINE_PTX_VENV, default <repo>/.venv-ptx (git-ignored).
# Idempotent and quiet; when the venv already holds exactly these pins it returns at once.
# Needs only python3 with pip. Works where python3 has no ensurepip (Debian without python3-venv): the venv is then
# made without pip and the system pip installs into it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${ENGINE_PTX_VENV:-$(dirname "$here")/.venv-ptx}
reqs=$here/requirements.txt
stamp=$venv/.engine-ptx-requirements  # a copy of requirements.txt as last installed
python=${PYTHON:-python3}

have_toolchain() {
    local sp
    for sp in "$venv"/lib*/python3*/site-packages/nvidia; do
        [[ -f $sp/cuda_nvrtc/lib/libnvrtc.so.12 && -f $sp/cuda_runtime/include/cuda_fp16.h &&
            -x $sp/cuda_nvcc/bin/ptxas ]] && return 0
    done
    return 1
}

if [[ -f $stamp ]] && cmp -s "$reqs" "$stamp" && have_toolchain; then
    exit 0
fi

if [[ ! -x $venv/bin/python ]]; then
    if "$python" -c 'import ensurepip, sys; sys.exit(0 if ensurepip.version() else 1)' >/dev/null 2>&1; then
        "$python" -m venv "$venv"
    else
        "$python" -m venv --without-pip "$venv"
    fi
fi

if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    pip=("$venv/bin/python" -m pip)
else
    # pip >= 22.3 can install into another interpreter's environment.
    pip=("$python" -m pip --python "$venv/bin/python")
fi

echo "ptx/setup.sh: installing the pinned kernel toolchain into $venv" >&2
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1 \
    "${pip[@]}" install --quiet -r "$reqs"

if ! have_toolchain; then
    echo "ptx/setup.sh: pip finished but $venv lacks libnvrtc.so.12, cuda_fp16.h or ptxas" >&2
    exit 1
fi
cp "$reqs" "$stamp"
