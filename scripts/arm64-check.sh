#!/usr/bin/env bash
# Proves that the gateway installs and runs on a Raspberry Pi's CPU (arm64) without the sim and
# test extras, on an x86_64 Debian machine: a Debian 12 arm64 root (debootstrap) run under
# qemu-user emulation (binfmt_misc), Debian's arm64 python3, python3-venv and mosquitto in it, a
# venv with `pip install onekey` from a wheel built here, then `onekey --help`,
# `onekey gateway --help` and scripts/arm64_smoke.py (both brokers, `onekey centre run`,
# `onekey gateway run`, one alarm to the centre and its acks back). See docs/operations.md,
# "On the Pi's CPU (arm64)".
#
# NOT run by CI nor by scripts/test.sh, and no test depends on it: it needs root, downloads a
# Debian arm64 root (about 45 MB of packages) and the gateway's wheels from PyPI (about 9 MB), and
# takes 5 to 12 minutes the first time (the root is kept: 1 to 2 minutes after that).
#
# Usage: sudo bash scripts/arm64-check.sh [ROOT_DIR]     (default /var/tmp/onekey-arm64-root)
# Safe to run again: finished steps are kept (the root, its packages); the venv is made anew
# each run, so the install is measured from scratch. Remove ROOT_DIR to start over (first
# `umount ROOT_DIR/proc` if a run was killed). Exits non-zero at the first step that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

root=$(realpath -m "${1:-/var/tmp/onekey-arm64-root}")
case "$root/" in
    "$repo"/*) echo "arm64-check: the root $root must be outside the repository" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "arm64-check: run as root (debootstrap, mount, chroot)" >&2; exit 2; }
mirror="${ONEKEY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
logs="$root.logs"
mkdir -p "$logs"

say() { echo "arm64-check: $*"; }
fail() { echo "arm64-check: FAILED: $*" >&2; exit 1; }
now() { date +%s; }
t_start=$(now)

# Runs a command in the root with a clean environment (nothing from this machine's pip or
# proxy settings leaks in, except the trust store copied below), for at most $limit seconds.
limit=600
inroot() {
    local cert=()
    [ -f "$root/etc/ssl/certs/build-host-ca-bundle.crt" ] &&
        cert=(PIP_CERT=/etc/ssl/certs/build-host-ca-bundle.crt)
    timeout "$limit" env -i PATH=/opt/onekey/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 "${cert[@]}" \
        chroot "$root" "$@"
}

# 1. Host tools.
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
    say "step=host_packages installing ${need[*]}"
    timeout 900 apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        "${need[@]}" >"$logs/host-apt.log"
fi

# 2. binfmt_misc: the kernel hands arm64 executables to qemu-aarch64-static (Debian registers
# it with the F flag, so it works inside a chroot without a copy of qemu there).
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
        fail "cannot mount binfmt_misc (a container without it?): arm64 programs cannot run here"
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null ||
    fail "qemu-aarch64 is not registered in binfmt_misc (update-binfmts --enable qemu-aarch64)"
say "step=binfmt qemu-aarch64=enabled"

# 3. Debian 12 (bookworm, the base of Raspberry Pi OS) arm64 root: first stage on the host,
# second stage (running arm64 dpkg under emulation) in the chroot.
if [ ! -d "$root/debootstrap" ] && [ ! -s "$root/var/lib/dpkg/status" ]; then
    say "step=debootstrap_first_stage root=$root mirror=$mirror"
    t=$(now)
    timeout 1800 debootstrap --arch=arm64 --foreign --variant=minbase bookworm "$root" "$mirror" \
        >"$logs/debootstrap-1.log" 2>&1 || fail "debootstrap first stage; see $logs/debootstrap-1.log"
    say "step=debootstrap_first_stage seconds=$(( $(now) - t ))"
fi
if [ -d "$root/debootstrap" ]; then
    say "step=debootstrap_second_stage (emulated; 2 to 6 minutes)"
    t=$(now)
    timeout 3600 chroot "$root" /debootstrap/debootstrap --second-stage \
        >"$logs/debootstrap-2.log" 2>&1 || fail "debootstrap second stage; see $logs/debootstrap-2.log"
    say "step=debootstrap_second_stage seconds=$(( $(now) - t ))"
fi
[ "$(chroot "$root" uname -m)" = aarch64 ] || fail "the root does not run as aarch64"

mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT

# 4. Debian's arm64 packages. No services start in the root (policy-rc.d), no compiler is
# installed: everything pip installs must come as a wheel.
cp /etc/resolv.conf "$root/etc/resolv.conf"
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
if ! inroot dpkg -s python3 python3-venv mosquitto ca-certificates >/dev/null 2>&1; then
    say "step=apt_install python3 python3-venv mosquitto (emulated; 1 to 5 minutes)"
    t=$(now)
    { limit=900 inroot apt-get update -qq &&
      limit=3600 inroot apt-get install -y -q --no-install-recommends \
        python3 python3-venv mosquitto ca-certificates; } >"$logs/apt.log" 2>&1 ||
        fail "apt-get in the root; see $logs/apt.log"
    say "step=apt_install seconds=$(( $(now) - t )) $(grep -E '^Need to get' "$logs/apt.log" || true)"
fi
say "step=debian_packages $(inroot dpkg-query -W -f '${Package}=${Version}/${Architecture} ' \
    python3 python3-venv mosquitto)"
compilers=$(inroot sh -c 'command -v gcc cc rustc cargo' | tr '\n' ' ' || true)
say "step=compilers_in_root found=${compilers:-none}"
# pip in the root trusts what this machine trusts (e.g. the CA of a TLS-inspecting proxy).
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/build-host-ca-bundle.crt"

# 5. The onekey wheel, built here (pure Python: py3-none-any).
py="${PYTHON:-}"
[ -n "$py" ] || { [ -x .venv/bin/python ] && py=.venv/bin/python; } || py=python3
wheels=$(mktemp -d)
trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$wheels"' EXIT
timeout 600 "$py" -m pip wheel -q --no-deps . -w "$wheels" >"$logs/wheel.log" 2>&1 ||
    fail "pip wheel; see $logs/wheel.log"
mkdir -p "$root/opt/onekey"
rm -f "$root"/opt/onekey/*.whl
cp "$wheels"/onekey-*.whl scripts/arm64_smoke.py "$root/opt/onekey/"
whl=$(basename "$(ls "$root"/opt/onekey/onekey-*.whl)")
say "step=wheel file=$whl"

# 6. A fresh venv and the install, timed. --only-binary: a dependency without an aarch64 wheel
# fails here instead of trying to compile (there is no compiler in the root, nor on most Pis).
rm -rf "$root/opt/onekey/venv"
t=$(now)
timeout 600 chroot "$root" /usr/bin/python3 -m venv /opt/onekey/venv || fail "python3 -m venv in the root"
say "step=venv seconds=$(( $(now) - t ))"
t=$(now)
limit=1800 inroot pip install --no-cache-dir --only-binary=:all: "/opt/onekey/$whl" \
    >"$logs/pip.log" 2>&1 || fail "pip install in the root; see $logs/pip.log"
pip_s=$(( $(now) - t ))
grep -E '^ *Downloading ' "$logs/pip.log" | sed 's/^ */arm64-check: wheel /'
total=$(grep -E '^ *Downloading ' "$logs/pip.log" |
    sed -E 's/.*\(([0-9.]+) (kB|MB)\).*/\1 \2/' |
    awk '{ s += ($2 == "MB") ? $1 * 1000 : $1 } END { printf "%.1f", s / 1000 }')
n_arm=$(grep -cE '^ *Downloading .*aarch64' "$logs/pip.log" || true)
n_all=$(grep -cE '^ *Downloading ' "$logs/pip.log" || true)
n_src=$(grep -cE 'Building wheel|\.tar\.gz' "$logs/pip.log" || true)
say "step=pip_install seconds=$pip_s downloaded_mb=$total wheels=$n_all aarch64_wheels=$n_arm built_from_source=$n_src"
tail -1 "$logs/pip.log" | sed 's/^/arm64-check: /'

# 7. The commands, then the smoke.
for cmd in "onekey --help" "onekey gateway --help"; do
    t=$(now)
    # shellcheck disable=SC2086
    out=$(limit=300 inroot $cmd) || fail "$cmd"
    say "step=run cmd=\"$cmd\" seconds=$(( $(now) - t )) first_line=\"${out%%$'\n'*}\""
done
t=$(now)
limit=900 inroot python3 /opt/onekey/arm64_smoke.py | tee "$logs/smoke.log" ||
    fail "the smoke; see $logs/smoke.log"
say "step=smoke seconds=$(( $(now) - t ))"
say "done: the gateway installs from wheels and runs on arm64 (emulated) in $(( $(now) - t_start )) s; logs in $logs"
