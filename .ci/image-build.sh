#!/usr/bin/env bash
# Build the container image (containers/Dockerfile) with podman, as root, on a Debian machine that
# reaches Debian's mirrors and PyPI but no image registry: podman is installed when missing, a
# Debian base image is bootstrapped locally with mmdebstrap, and the Dockerfile is built on it
# (only its BASE build argument differs from the release build on the CUDA base).
#
# Usage: .ci/image-build.sh        then: .venv/bin/python -m pytest tests/test_image.py
#
# Variables (all optional):
#   HPCTHREADS_IMAGE          the image to build (default localhost/hpcthreads:ci; the tests read it too)
#   HPCTHREADS_BASE_IMAGE     the base, passed as --build-arg BASE (default localhost/debian:SUITE);
#                             bootstrapped with mmdebstrap when podman does not have it
#   HPCTHREADS_BASE_SUITE     the Debian suite of a bootstrapped base (default bookworm)
#   HPCTHREADS_BASE_TAR       cache of the bootstrapped root filesystem, reused while it exists
#                             (default /var/tmp/hpcthreads-SUITE-rootfs.tar)
#   HPCTHREADS_IMAGE_INSTALL  1 (default): apt-get install podman and its helpers when missing
#   HPCTHREADS_BUILD_ARGS     more arguments for `podman build`, split on spaces (e.g. --no-cache)
#   HPCTHREADS_WHEELS         a folder of mpi4py and h5py wheels, as scripts/install-parallel-h5py.sh
#                             keeps them when given the same variable (CI: those of .venv-mpio);
#                             mounted read-only into the build, whose install script installs them
#                             when they were built for the image's Python minor version and Debian
#                             MPICH/HDF5 packages, and compiles both from source otherwise (as it
#                             does without the variable)
#
# podman needs /etc/containers/containers.conf with the runc runtime (crun fails on hosts with
# hybrid cgroups) and ulimits no higher than the host's hard limits (raising them is not
# permitted in CI); the file is written when absent and left alone when it exists. Inside the
# build, PyPI is reached over HTTPS with the host's CA bundle, mounted read-only.
#
# The Debian base is bootstrapped once: its root filesystem is kept in HPCTHREADS_BASE_TAR and
# imported from there when podman no longer has the image (delete the file to bootstrap again).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
image=${HPCTHREADS_IMAGE:-localhost/hpcthreads:ci}
suite=${HPCTHREADS_BASE_SUITE:-bookworm}
base=${HPCTHREADS_BASE_IMAGE:-localhost/debian:$suite}
base_tar=${HPCTHREADS_BASE_TAR:-/var/tmp/hpcthreads-$suite-rootfs.tar}
install=${HPCTHREADS_IMAGE_INSTALL:-1}
read -r -a build_args <<<"${HPCTHREADS_BUILD_ARGS:-}"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
wheels=${HPCTHREADS_WHEELS:-}
conf=/etc/containers/containers.conf
packages=(podman runc fuse-overlayfs uidmap slirp4netns mmdebstrap ca-certificates)

fail() {
    echo "image-build: $*" >&2
    exit 1
}

# step NAME CMD...: run CMD, then print how long it took; a failure names the step. (CMD runs
# under `||`, where set -e does not apply: functions given to it chain their commands with &&.)
step() {
    local name=$1 start=$SECONDS
    shift
    echo "image-build: $name ..."
    "$@" || fail "$name failed (exit $?) after $((SECONDS - start)) s"
    echo "image-build: $name took $((SECONDS - start)) s"
}

[[ $(id -u) == 0 ]] || fail "run as root (podman builds rootful here; mmdebstrap needs root too)"

install_tools() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}
if [[ $install == 1 ]] && ! command -v podman runc mmdebstrap >/dev/null; then
    step "installing ${packages[*]}" install_tools
fi
command -v podman >/dev/null || fail "podman is not installed (HPCTHREADS_IMAGE_INSTALL=1 installs it)"

if [[ ! -e $conf ]]; then
    mkdir -p "$(dirname "$conf")"
    cat >"$conf" <<'EOF'
# Written by hpcthreads' .ci/image-build.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
    echo "image-build: wrote $conf (runc, ulimits within the host's limits)"
elif ! grep -q '^ *runtime *= *"runc"' "$conf"; then
    echo "image-build: note: $conf exists and does not choose runc; left as it is" >&2
fi

bootstrap() {
    if [[ ! -s $base_tar ]]; then
        mkdir -p "$(dirname "$base_tar")"
        # Into a temporary name first, so that an interrupted bootstrap is not taken for a cache
        mmdebstrap --variant=minbase --include=ca-certificates --format=tar "$suite" "$base_tar.tmp" \
            && mv "$base_tar.tmp" "$base_tar" || return 1
    fi
    podman import "$base_tar" "$base" >/dev/null
}
if ! podman image exists "$base"; then
    command -v mmdebstrap >/dev/null || fail "no base image $base and no mmdebstrap to make one"
    step "bootstrapping $base from Debian $suite ($base_tar)" bootstrap
fi

[[ -r $ca_bundle ]] || fail "no CA bundle at $ca_bundle (apt-get install ca-certificates)"
mounts=(-v "$ca_bundle:$ca_bundle:ro")
# The wheels, where the Dockerfile looks for them (a path relative to the caller's directory)
if [[ -n $wheels ]]; then
    if [[ -d $wheels ]]; then
        mounts+=(-v "$(cd "$wheels" && pwd):/tmp/hpcthreads-wheels:ro")
        echo "image-build: mpi4py and h5py wheels from $wheels (reused if they fit the image)"
    else
        echo "image-build: note: HPCTHREADS_WHEELS=$wheels is not a folder; mpi4py and h5py compile in the build" >&2
    fi
fi
cd "$root"
# --format docker: the OCI format has no SHELL, and podman would run every RUN without pipefail
step "building $image on $base" podman build --format docker -f containers/Dockerfile --build-arg "BASE=$base" \
    "${mounts[@]}" -t "$image" "${build_args[@]}" .
podman image ls "$image"
