#!/usr/bin/env bash
# System packages the test suite exercises for real: the PDF route (headless Chromium), pdftotext
# (poppler-utils: the PDF test reads the printed text back) and a single-node SLURM (slurm-wlm +
# munge) for the SLURM back end. apt-get runs only if something is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/install_pdf_deps.sh"
missing=()
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
{ command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; } \
    || missing+=(slurm-wlm munge)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_deps: no apt-get; install ${missing[*]} to run every test" \
         "(the PDF and SLURM tests skip without them)" >&2
    exit 0
fi
bash "$here/apt_install.sh" install_test_deps "${missing[@]}"
