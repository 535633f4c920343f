"""Headless Chromium: finding it and printing an HTML report to PDF bytes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from .report_errors import PDF_INSTALL_HINT, ReportError, ReportToolMissingError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find() -> str | None:
    """Path of a Chromium/Chrome executable usable for PDF printing, or None."""
    env = os.environ.get("FEDPRUNE_CHROMIUM")
    if env:
        found = shutil.which(env)
        return found  # an explicit but wrong setting is reported, not silently replaced
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require() -> str:
    exe = find()
    if exe is None:
        env = os.environ.get("FEDPRUNE_CHROMIUM")
        what = (
            f"FEDPRUNE_CHROMIUM={env!r} is not an executable"
            if env
            else "no 'chromium' executable on PATH (looked for: " + ", ".join(CHROMIUM_NAMES) + ")"
        )
        raise ReportToolMissingError(
            f"PDF export needs a headless Chromium, but {what}. To install it, {PDF_INSTALL_HINT}."
        )
    return exe


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    # Own process group, so that a timeout also ends Chromium's helper processes.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise ReportError(f"Chromium did not finish printing within {timeout:.0f} s: {' '.join(cmd)}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def print_pdf(exe: str, html: str, notebook_path: Path, timeout: float,
              mathjax_url: str | None) -> bytes:
    """The PDF Chromium prints of `html`; a ReportError when it prints nothing usable."""
    with tempfile.TemporaryDirectory(prefix="fedprune-pdf-") as tmp:
        tmpdir = Path(tmp)
        html_file = tmpdir / f"{notebook_path.stem}.html"
        html_file.write_text(html, encoding="utf-8")
        pdf_tmp = tmpdir / "out.pdf"
        cmd = _print_command(exe, tmpdir / "profile", pdf_tmp, html_file)
        proc = _run(cmd, timeout)
        if not pdf_tmp.is_file() or pdf_tmp.stat().st_size == 0:
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
            raise ReportError(
                f"Chromium produced no PDF for {notebook_path} (exit code {proc.returncode}).\n"
                f"command: {' '.join(cmd)}\nstderr (last lines):\n{tail}"
            )
        data = pdf_tmp.read_bytes()
        if not data.startswith(b"%PDF-"):
            raise ReportError(f"Chromium wrote something that is not a PDF for {notebook_path}")
        if b"/Font" not in data and b"/XObject" not in data:
            # Seen when a blocking <script> (e.g. an unreachable --mathjax-url) stalls the page
            # until --timeout: Chromium then prints one empty Letter page and exits 0.
            raise ReportError(
                f"Chromium printed a blank page for {notebook_path}: the page did not finish "
                f"loading (an unreachable script URL such as mathjax_url={mathjax_url!r}?) "
                "or the notebook has no visible content."
            )
        return data


def _print_command(exe: str, profile: Path, pdf: Path, html_file: Path) -> list[str]:
    return [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-pdf-header-footer",
        # Give up on a page that never finishes loading (e.g. an unreachable mathjax_url).
        "--timeout=30000",
        # Let page scripts (a local MathJax, if given) finish before printing; virtual
        # time is fast-forwarded while the page is idle, so this costs little.
        "--virtual-time-budget=10000",
        f"--user-data-dir={profile}",
        f"--print-to-pdf={pdf}",
        html_file.resolve().as_uri(),
    ]
