#!/usr/bin/env bash
# Install the system packages needed by the PDF report route of FedPrune-Sparse.
#
# Route: nbconvert HTML (webpdf template, images embedded) printed to PDF by
# Debian's headless `chromium` (see fedprune_core/reports.py). Chosen over the
# LaTeX route because it is smaller (~414 MB installed vs ~596 MB for
# texlive-xetex + fonts + pandoc on Debian 12) and faster per export.
#
# Idempotent: apt-get runs only when something is missing. Non-interactive and quiet.
# Usage: scripts/install_pdf_deps.sh        (as root, or with sudo available)
#        make pdf-deps
set -euo pipefail

missing=()
have_chromium() {
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || command -v google-chrome >/dev/null 2>&1 || command -v google-chrome-stable >/dev/null 2>&1
}
have_chromium || missing+=(chromium)
# Without any font, chromium prints empty boxes; DejaVu is small and sufficient.
if ! { command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list 2>/dev/null | head -n1)" ]; }; then
    missing+=(fonts-dejavu-core)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install_pdf_deps: PDF route already available ($(command -v chromium || command -v chromium-browser || command -v google-chrome || command -v google-chrome-stable))."
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_pdf_deps: apt-get not found; install these packages with your system's" \
         "package manager: ${missing[*]}" >&2
    exit 1
fi

bash "$(dirname "$0")/apt_install.sh" install_pdf_deps "${missing[@]}"
echo "install_pdf_deps: done ($(command -v chromium || command -v chromium-browser || echo '?'))."
