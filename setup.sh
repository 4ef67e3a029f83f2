#!/usr/bin/env bash
# Set up cqtf on a Debian/Ubuntu machine, then run the default job (train, flash the emulated board,
# validate, report). Safe to run again: it only does what is missing.
#   ./setup.sh            set up, then `cqtf run --out runs/default`
#   ./setup.sh --no-run   set up only
set -euo pipefail
cd "$(dirname "$0")"

DEBIAN_PACKAGES=(gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc)
VENV=.venv

log() { printf '[setup] %s\n' "$*" >&2; }

install_debian_packages() {
    local missing=()
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
    [ ${#missing[@]} -eq 0 ] && return
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { log "need root or sudo to install: ${missing[*]}"; exit 1; }
        sudo="sudo"
    fi
    log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_packages() {
    command -v python3 >/dev/null || { log "python3 (3.10 or newer) is required"; exit 1; }
    [ -x "$VENV/bin/python" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
    local stamp="$VENV/.cqtf-installed" want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing Python packages into $VENV (torch is pinned to the CPU build 2.13.0)"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
        echo "$want" > "$stamp"
    fi
}

prepare_platformio() {
    log "preparing PlatformIO for offline builds"
    "$VENV/bin/python" -m cqtf.pio_offline >/dev/null
}

install_debian_packages
install_python_packages
prepare_platformio
log "ready: $VENV/bin/cqtf"

if [ "${1:-}" != "--no-run" ]; then
    exec "$VENV/bin/cqtf" run --out runs/default
fi
