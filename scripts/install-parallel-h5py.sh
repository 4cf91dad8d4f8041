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
#
# Takes about 5 minutes: h5py and mpi4py are compiled from source. Building h5py
# needs --no-build-isolation (with isolation it pins an mpi4py that must be
# compiled and can exhaust memory).
set -euo pipefail

venv=${1:-.venv-mpio}
flavour=${HDF5_FLAVOUR:-mpich}
repo=$(cd "$(dirname "$0")/.." && pwd)
extras=${HPCTHREADS_EXTRAS-test}

if [ "${SKIP_APT:-0}" != 1 ]; then
    if [ "$flavour" = mpich ]; then
        packages="libhdf5-mpich-dev mpich"
    else
        packages="libhdf5-openmpi-dev openmpi-bin"
    fi
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
"$venv/bin/pip" install -q -U 'setuptools>=77.0.1' 'Cython>=3,<4' numpy pkgconfig packaging wheel
# Both from source against this MPI, even where `pip install .` already put PyPI's wheels into the
# venv (pip would keep them as satisfying the requirement): mpi4py's wheel looks for libmpi.so.12,
# which Debian's MPICH names libmpich.so.12, and h5py's wheel has a serial HDF5 inside
"$venv/bin/pip" install -q --force-reinstall --no-deps --no-binary=mpi4py mpi4py
HDF5_MPI=ON "$venv/bin/pip" install -q --force-reinstall --no-deps --no-binary=h5py --no-build-isolation h5py
"$venv/bin/pip" install -q -e "${repo}${extras:+[$extras]}"

"$venv/bin/python" - <<'PY'
import h5py
from mpi4py import MPI

assert h5py.get_config().mpi, "h5py was built without MPI"
print(f"parallel h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}) on {MPI.Get_library_version().splitlines()[0]}")
PY
