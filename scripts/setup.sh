#!/usr/bin/env bash
# One-step set-up for tuner on Debian 12 (root). Used by `make demo` and `make test`.
#
# Idempotent: each step first checks whether its work is already done and says so;
# a second run with everything in place takes about a second.
#
# Steps:
#   1. Debian packages: BCC's Python bindings, kernel headers BCC can compile against,
#      iproute2, bpftool, libbpf, a C compiler (benchmark workloads), and the real servers the
#      tests and experiments run (nginx, HAProxy) with wrk, Prometheus (the fleet-metrics
#      test scrapes agents with it) and OpenSSH's server (the SSH-experiment test runs it in
#      test namespaces). Their system services are not started: tests and experiments run
#      their own instances in test namespaces.
#   2. Kernel headers linked under /lib/modules/$(uname -r) when the running kernel has none.
#   3. tracefs, debugfs and bpffs mounted when they are not.
#   4. A virtual environment in .venv with tuner installed in editable mode and BCC importable.
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (BPF, mounts and apt need it); try: sudo make $*"

# --- 1. Debian packages -------------------------------------------------------------------
PKGS=(python3-bpfcc linux-headers-amd64 iproute2 bpftool libbpf1 gcc libc6-dev
      nginx-light haproxy wrk prometheus openssh-server)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    say "Debian packages present: ${PKGS[*]}"
else
    command -v apt-get >/dev/null || die "apt-get not found: this set-up needs Debian 12 (bookworm)"
    say "installing Debian packages: ${missing[*]}"
    apt-get update -q >/tmp/tuner-apt-update.log 2>&1 \
        || die "apt-get update failed (no network to the package registry?); see /tmp/tuner-apt-update.log"
    # a policy-rc.d that says no: packaged servers do not start their system services
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        >/tmp/tuner-apt-install.log 2>&1 \
        || { [ $own_policy -eq 1 ] && rm -f "$policy"
             die "apt-get install ${missing[*]} failed; see /tmp/tuner-apt-install.log"; }
    [ $own_policy -eq 1 ] && rm -f "$policy"
fi

# --- 2. Kernel headers for BCC ---------------------------------------------------------------
KREL=$(uname -r)
MODDIR=/lib/modules/$KREL
if [ -e "$MODDIR/build/include/linux/kconfig.h" ]; then
    say "kernel headers usable by BCC: $MODDIR/build"
else
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
    [ -n "$hdr" ] && [ -n "$common" ] || die "no headers under /usr/src; apt-get install linux-headers-amd64"
    say "running kernel $KREL has no headers; linking $hdr"
    mkdir -p "$MODDIR"
    ln -sfn "$hdr" "$MODDIR/build"
    ln -sfn "$common" "$MODDIR/source"
fi

# --- 3. File systems -------------------------------------------------------------------------
mount_fs() { # type path
    if mountpoint -q "$2"; then
        say "$1 mounted at $2"
    else
        say "mounting $1 at $2"
        mount -t "$1" "$1" "$2" || die "cannot mount $1 at $2"
    fi
}
mount_fs tracefs /sys/kernel/tracing
mount_fs debugfs /sys/kernel/debug
mount_fs bpf /sys/fs/bpf

# --- 4. Python virtual environment -----------------------------------------------------------
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.tuner-installed
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV with $($PY --version 2>&1)"
    "$PY" -m venv "$VENV" || die "cannot create $VENV with $PY; install python3 >= 3.11 with venv"
fi
"$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$VENV uses Python < 3.11; remove $VENV and set PYTHON to a newer python3"
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# BCC's bindings are pure Python over libbcc.so.0 and come from Debian, not PyPI (the PyPI
# package called "bcc" is something else). Link just that package into the venv.
if [ ! -e "$site/bcc/__init__.py" ]; then
    say "linking Debian's BCC bindings into $VENV"
    ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
fi
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
    say "Python packages installed in $VENV"
else
    say "installing tuner and its Python dependencies into $VENV (first run takes a minute)"
    # --no-compile: bytecode is written on first import instead, for what runs (the S3 test
    # server's botocore alone is thousands of modules the tests never import)
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-compile -e '.[dev]' \
        >/tmp/tuner-pip.log 2>&1 \
        || die "pip install failed (no network to the package registry?); see /tmp/tuner-pip.log"
    touch "$STAMP"
fi
"$VENV/bin/python" -c 'import bcc' 2>/dev/null || die "BCC is not importable from $VENV"
say "ready: $VENV/bin/tuner"
