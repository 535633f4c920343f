"""The errors a report export raises, with the hint for installing what PDF export needs."""

PDF_INSTALL_HINT = (
    "run `make pdf-deps` (or `sudo scripts/install_pdf_deps.sh`, which does "
    "`apt-get install chromium`), or set FEDPRUNE_CHROMIUM=/path/to/chromium"
)


class ReportError(RuntimeError):
    """A report could not be produced."""


class ReportToolMissingError(ReportError):
    """A system tool needed for an export format is not installed."""


# --------------------------------------------------------------------------- helpers
