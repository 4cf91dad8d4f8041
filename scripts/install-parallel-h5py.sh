#!/usr/bin/env bash
# Build h5py (and mpi4py) against Debian's parallel HDF5 in a virtual environment, so that
# h5py.get_config().mpi is True and files can be written collectively (driver='mpio').
# The measured recipe of ENVIRONMENT.md ("Parallel h5py"); the container recipes run it too.
#
# Usage: scripts/install-parallel-h5py.sh VENV
#
# Variables:
#   HPCTHREADS_MPI   mpich (default) or openmpi: which Debian MPI and HDF5 flavour
#   HPCTHREADS_APT   1 (default when root): apt-get install the Debian packages first
# Takes about 3 min (h5py) plus 3 min (mpi4py, MPICH only) to compile.
set -euo pipefail

venv=${1:?usage: $0 VENV}
flavour=${HPCTHREADS_MPI:-mpich}
apt=${HPCTHREADS_APT:-$([[ $EUID == 0 ]] && echo 1 || echo 0)}
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
case $flavour in
    mpich) packages=(libhdf5-mpich-dev mpich) ;;
    openmpi) packages=(libhdf5-openmpi-dev openmpi-bin) ;;
    *)
        echo "install-parallel-h5py: HPCTHREADS_MPI must be mpich or openmpi, not $flavour" >&2
        exit 2
        ;;
esac
# Name the compiler wrapper explicitly: installing one MPI may switch /usr/bin/mpicc to the other
cc=mpicc.$flavour
hdf5_dir=/usr/lib/$arch/hdf5/$flavour

if [[ $apt == 1 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" pkg-config gcc python3-dev >/dev/null
fi
pip=("$venv/bin/python" -m pip install --no-cache-dir)

# A fresh venv's setuptools fails on h5py's metadata; the build needs these without isolation
"${pip[@]}" -U 'setuptools>=77.0.1' 'Cython>=3,<4' numpy pkgconfig packaging wheel

# Without --no-build-isolation h5py's build pins an mpi4py that has no wheel and compiles it
HDF5_MPI=ON HDF5_DIR=$hdf5_dir CC=$cc \
    "${pip[@]}" --no-binary=h5py --no-build-isolation --force-reinstall --no-deps h5py

# mpi4py must use the same MPI as HDF5: Open MPI's works as a wheel, MPICH's is built from source
if [[ $flavour == mpich ]]; then
    MPICC=$cc "${pip[@]}" --no-binary=mpi4py --force-reinstall --no-deps mpi4py
else
    "${pip[@]}" mpi4py
fi

"$venv/bin/python" -c 'import h5py; assert h5py.get_config().mpi, "h5py was built without MPI"'
echo "install-parallel-h5py: h5py with MPI ($flavour, HDF5 in $hdf5_dir) installed in $venv"
