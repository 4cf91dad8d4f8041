#!/usr/bin/env bash
# Build a virtual environment whose h5py has MPI (parallel HDF5, the mpio driver)
# and whose mpi4py uses the same MPI, then install hpcthreads into it.
#
# Usage: scripts/install-parallel-h5py.sh [VENV]        (default VENV: .venv-mpio)
#
# Variables:
#   HDF5_FLAVOUR  mpich (default) or openmpi: which Debian parallel HDF5 to use
#   SKIP_APT      1 to skip apt-get (the packages are already installed, or the
#                 site provides HDF5 and MPI: then set HDF5_DIR and MPICC yourself)
#   HDF5_DIR      parallel HDF5 prefix (default: Debian's for the flavour)
#   MPICC         MPI compiler wrapper (default: mpicc.mpich or mpicc.openmpi)
#   HPCTHREADS_EXTRAS  extras installed with hpcthreads (default: test; empty for none,
#                 as in the container images)
#   HPCTHREADS_WHEELS  a folder that keeps the mpi4py and h5py wheels this script builds
#                 (default: none, they are built in a temporary folder). Wheels found there are
#                 installed instead of compiling again when they were built for this Python
#                 (same minor version and ABI) and the same Debian MPI and parallel HDF5
#                 packages, as its file wheels.txt records; otherwise they are built again,
#                 into the folder if it is writable (CI hands it to the image build this way).
#                 Without Debian's package versions (a site's HDF5 and MPI) nothing is reused.
#
# Takes about 5 minutes when h5py and mpi4py are compiled from source. Building h5py
# needs --no-build-isolation (with isolation it pins an mpi4py that must be
# compiled and can exhaust memory).
set -euo pipefail

venv=${1:-.venv-mpio}
flavour=${HDF5_FLAVOUR:-mpich}
repo=$(cd "$(dirname "$0")/.." && pwd)
extras=${HPCTHREADS_EXTRAS-test}
wheels=${HPCTHREADS_WHEELS:-}

if [ "$flavour" = mpich ]; then
    packages="libhdf5-mpich-dev mpich"
    dev_packages="libhdf5-mpich-dev libmpich-dev"
else
    packages="libhdf5-openmpi-dev openmpi-bin"
    dev_packages="libhdf5-openmpi-dev libopenmpi-dev"
fi
if [ "${SKIP_APT:-0}" != 1 ]; then
    # Images (and CUDA base images) ship without apt lists: fetch them first. python3-dev: the
    # headers that mpi4py and h5py compile against (images have python3 without them)
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086 # the package list is split on purpose
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages pkg-config python3-dev \
        >/dev/null
fi

multiarch=$(gcc -print-multiarch)
export HDF5_DIR=${HDF5_DIR:-/usr/lib/$multiarch/hdf5/$flavour}
export MPICC=${MPICC:-mpicc.$flavour}
export CC=$MPICC

python3 -m venv "$venv"

# What the wheels are built for: the Python ABI (its minor version), the MPI and HDF5 used, and
# the Debian packages that provide them. Empty when the packages are not Debian's.
build_info() {
    local soabi versions
    soabi=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("SOABI"))')
    # shellcheck disable=SC2086 # the package list is split on purpose
    versions=$(dpkg-query -W -f='package ${Package} ${Version}\n' $dev_packages 2>/dev/null) || return 0
    printf 'python %s\nhdf5_dir %s\nmpicc %s\n%s\n' "$soabi" "$HDF5_DIR" "$MPICC" "$versions"
}

# wheel_of NAME DIR: the one wheel of NAME in DIR, or nothing
wheel_of() {
    local found=("$2/$1"-*.whl)
    if [ "${#found[@]}" = 1 ] && [ -f "${found[0]}" ]; then
        echo "${found[0]}"
    fi
}

info=$(build_info)
reuse=0
if [ -n "$wheels" ] && [ -n "$info" ] && [ -f "$wheels/wheels.txt" ] \
    && [ "$(cat "$wheels/wheels.txt")" = "$info" ] \
    && [ -n "$(wheel_of mpi4py "$wheels")" ] && [ -n "$(wheel_of h5py "$wheels")" ]; then
    reuse=1
    echo "install-parallel-h5py: reusing the wheels in $wheels (built for this Python, MPI and HDF5)"
elif [ -n "$wheels" ]; then
    echo "install-parallel-h5py: no wheels in $wheels for this Python, MPI and HDF5: building them"
fi

if [ "$reuse" = 0 ]; then
    # Where the wheels are built: the folder when it can be written (emptied of older wheels
    # first), a temporary folder otherwise
    if [ -n "$wheels" ] && mkdir -p "$wheels" 2>/dev/null && [ -w "$wheels" ]; then
        rm -f "$wheels/wheels.txt" "$wheels"/mpi4py-*.whl "$wheels"/h5py-*.whl
    else
        wheels=$(mktemp -d)
        trap 'rm -rf "$wheels"' EXIT
    fi
    "$venv/bin/pip" install -q -U 'setuptools>=77.0.1' 'Cython>=3,<4' numpy pkgconfig packaging wheel
    # Both from source against this MPI, even where `pip install .` already put PyPI's wheels into
    # the venv (pip would keep them as satisfying the requirement): mpi4py's wheel looks for
    # libmpi.so.12, which Debian's MPICH names libmpich.so.12, and h5py's wheel has a serial HDF5
    # inside. mpi4py is installed before h5py is built: h5py's build imports it.
    "$venv/bin/pip" wheel -q --no-deps --no-binary=mpi4py -w "$wheels" mpi4py
    "$venv/bin/pip" install -q --force-reinstall --no-deps "$(wheel_of mpi4py "$wheels")"
    HDF5_MPI=ON "$venv/bin/pip" wheel -q --no-deps --no-binary=h5py --no-build-isolation -w "$wheels" h5py
    # Recorded last, so that an interrupted build is not taken for a complete one
    if [ -n "$info" ]; then
        echo "$info" >"$wheels/wheels.txt"
    fi
else
    "$venv/bin/pip" install -q --force-reinstall --no-deps "$(wheel_of mpi4py "$wheels")"
fi
"$venv/bin/pip" install -q --force-reinstall --no-deps "$(wheel_of h5py "$wheels")"
"$venv/bin/pip" install -q -e "${repo}${extras:+[$extras]}"

"$venv/bin/python" - <<'PY'
import h5py
from mpi4py import MPI

assert h5py.get_config().mpi, "h5py was built without MPI"
print(f"parallel h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}) on {MPI.Get_library_version().splitlines()[0]}")
PY
