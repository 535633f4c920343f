#!/usr/bin/env bash
# Debian packages, installed quietly and non-interactively as root or through sudo; the install
# scripts call it once they know what is missing.
# Usage: scripts/apt_install.sh TAG PACKAGE...   (TAG names the caller in its messages)
set -euo pipefail
tag="$1"
shift
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "$tag: need root (or sudo) to install: $*" >&2
        exit 1
    fi
    SUDO="sudo"
fi
echo "$tag: installing $* ..."
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null
