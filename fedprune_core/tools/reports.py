"""Export executed notebooks to self-contained HTML / PDF reports.

HTML
    nbconvert's ``HTMLExporter`` (``lab`` template) with images embedded, code inputs and
    prompts hidden by default.  Equivalent to
    ``jupyter nbconvert --to html --no-input --no-prompt --embed-images``.

PDF
    The same HTML printed to PDF by a headless **Chromium** (Debian package ``chromium``).
    Chosen over nbconvert's LaTeX route because it needs a smaller system install
    (~414 MB vs ~596 MB for texlive-xetex + fonts + pandoc on Debian 12), is faster
    (~0.6-1.7 s per report in-process, ~2 s via the CLI) and renders what the HTML report
    shows (A4 pages, long code lines wrapped, tables in 8 pt type with wide ones on landscape
    pages, figures not split, headings kept with what follows: print_layout.py).  nbconvert's
    ``webpdf`` exporter is not used: its Playwright backend only finds its own downloaded
    browser, which cannot be fetched offline.  Install the browser with
    ``make pdf-deps`` (runs ``scripts/install_pdf_deps.sh``).  ``FEDPRUNE_CHROMIUM`` may
    point at another Chromium/Chrome executable.

Cell tags (honoured in both formats, also when inputs are shown):

* ``hide``, ``remove-cell``, ``remove_cell``: drop the whole cell (input and output);
* ``remove-input``, ``remove_input``, ``hide-input``, ``hide_input``: keep outputs only;
* ``remove-output``, ``remove_output``, ``hide-output``, ``hide_output``: keep input only.

Self-contained, offline: neither format loads anything from the network.  nbconvert's lab
template would load MathJax and mermaid from a CDN and require.js (widgets / JavaScript
outputs only); all three are left out, so a report opened without internet looks the same and
never waits on a script.  LaTeX math in markdown therefore stays as raw ``$...$`` text (the
project's notebooks use none) unless ``mathjax_url`` is given: pass a local copy (e.g.
``file:///.../mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe`` from the npm ``mathjax@2``
package) or set ``FEDPRUNE_MATHJAX_URL`` to typeset math in both formats.  Jupyter widget
outputs (e.g. ``tqdm.auto`` progress bars) cannot be rendered statically, so they are dropped
along with the notebook's widget-state metadata, which also keeps a malformed widget state from
failing nbconvert's validation.

CLI (used by the Makefile)::

    python -m fedprune_core.tools.reports html results/analysis/analysis.ipynb results/*/experiment.ipynb
    python -m fedprune_core.tools.reports pdf --skip-missing 'results/*/experiment.ipynb'
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import nbformat

from ..errors import ConfigError
from . import chromium
from .print_layout import for_print, for_screen
from .report_errors import ReportError, ReportToolMissingError

__all__ = [
    "ReportError",
    "ReportToolMissingError",
    "export_html",
    "export_pdf",
    "export_reports",
    "find_chromium",
    "main",
]

REMOVE_CELL_TAGS = ("hide", "remove-cell", "remove_cell")
REMOVE_INPUT_TAGS = ("remove-input", "remove_input", "hide-input", "hide_input")
REMOVE_OUTPUT_TAGS = ("remove-output", "remove_output", "hide-output", "hide_output")

WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
DEFAULT_PDF_TIMEOUT = 180.0  # seconds for one Chromium print
find_chromium = chromium.find  # public: tests and `make pdf-deps` look it up here



def pdf_timeout(value: float | None = None) -> float:
    """Seconds for one Chromium print: `value`, else $FEDPRUNE_PDF_TIMEOUT, else the default.
    Anything but a finite number > 0 is a ConfigError naming the setting, said before any work
    (a typo in the variable is not a traceback after the run it was to report on)."""
    name, text = ("timeout", value) if value is not None else (
        "FEDPRUNE_PDF_TIMEOUT", os.environ.get("FEDPRUNE_PDF_TIMEOUT"))
    if text is None or text == "":
        return DEFAULT_PDF_TIMEOUT
    try:
        seconds = float(text)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{name}: {text!r} is not allowed; allowed: a number of seconds > 0 "
                          f"(default {DEFAULT_PDF_TIMEOUT:g})")
    return seconds


def _check_format(fmt: str) -> str:
    fmt = fmt.lower()
    if fmt not in ("html", "pdf"):
        raise ValueError(f"unknown report format {fmt!r}; expected 'html' or 'pdf'")
    return fmt


def _default_out(notebook_path: Path, suffix: str) -> Path:
    return notebook_path.with_suffix(suffix)


def _strip_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop widget outputs and widget-state metadata (not renderable in a static report)."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs", [])
        kept = [o for o in outputs if WIDGET_VIEW_MIME not in o.get("data", {})]
        if len(kept) != len(outputs):
            cell.outputs = kept
    return nb


def _read_notebook(notebook_path: Path) -> nbformat.NotebookNode:
    if not notebook_path.is_file():
        if (notebook_path.parent / "summary.json").is_file():
            # a run made without the notebook (`python -m fedprune_core run`, the explorer)
            raise ReportError(
                f"{notebook_path.parent} holds a finished run made without the experiment "
                f"notebook, so there is no {notebook_path.name} to report on; its figures, "
                f"summary.json and run.log are in that folder. For a report, run it through the "
                f"notebook: `python -m fedprune_core notebook ... --overwrite --report html` "
                f"(make run FORCE=1), or under another --run_name")
        raise FileNotFoundError(f"notebook not found: {notebook_path}")
    try:
        nb = nbformat.read(notebook_path, as_version=4)
    except Exception as exc:  # malformed JSON, wrong nbformat version, ...
        raise ReportError(f"cannot read notebook {notebook_path}: {exc}") from exc
    return _strip_widgets(nb)


# A Jinja template layered on nbconvert's ``lab`` template that empties the blocks loading
# scripts from a CDN: require.js (a *blocking* script that only serves widgets / JavaScript
# outputs, which a static report cannot run; on a network that drops packets it blanks the page
# until the browser gives up), mermaid, and MathJax unless a MathJax URL is given explicitly.
# A PNG output carries the alternative text its display gave (``Image(..., alt=...)``, kept in
# its metadata): the lab template drops it, and nbconvert then warns once per report that
# images lack it.
_PNG_WITH_ALT = """{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
{%- if 'image/png' in output.metadata.get('filenames', {}) %}
<img src="{{ output.metadata.filenames['image/png'] | posix_path | escape_html }}"
{%- else %}
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
{%- endif %}
{%- set alt=output | get_metadata('alt', 'image/png') -%}
{%- if alt %}
alt="{{ alt | escape_html }}"
{%- endif %}
{%- set width=output | get_metadata('width', 'image/png') -%}
{%- if width is not none %}
width={{ width | escape_html }}
{%- endif %}
{%- set height=output | get_metadata('height', 'image/png') -%}
{%- if height is not none %}
height={{ height | escape_html }}
{%- endif %}
>
</div>
{%- endblock data_png %}
"""


def _report_template(with_mathjax: bool) -> str:
    blocks = ["html_head_js_requirejs", "html_head_js_mermaidjs"]
    if not with_mathjax:
        blocks.append("html_head_js_mathjax")
    return "{%- extends 'lab/index.html.j2' -%}\n" + "".join(
        f"{{%- block {b} -%}}{{%- endblock {b} -%}}\n" for b in blocks) + _PNG_WITH_ALT


def _render_html(
    notebook_path: Path,
    hide_input: bool,
    mathjax_url: str | None,
    for_pdf: bool = False,
) -> str:
    # Imported lazily: nbconvert is an optional ("notebooks") dependency of the core package.
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    nb = _read_notebook(notebook_path)

    c = Config()
    # TagRemovePreprocessor is among HTMLExporter's default preprocessors; configure and enable it.
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_cell_tags = set(REMOVE_CELL_TAGS)
    c.TagRemovePreprocessor.remove_input_tags = set(REMOVE_INPUT_TAGS)
    c.TagRemovePreprocessor.remove_all_outputs_tags = set(REMOVE_OUTPUT_TAGS)

    mathjax_url = mathjax_url or os.environ.get("FEDPRUNE_MATHJAX_URL")
    template = _report_template(with_mathjax=bool(mathjax_url))
    exporter = HTMLExporter(
        config=c,
        template_name="lab",
        extra_loaders=[DictLoader({"fedprune_report.html.j2": template})],
    )
    exporter.template_file = "fedprune_report.html.j2"
    exporter.embed_images = True
    exporter.exclude_input = hide_input
    exporter.exclude_input_prompt = hide_input
    exporter.exclude_output_prompt = hide_input
    if mathjax_url:
        exporter.mathjax_url = mathjax_url

    resources = {
        "metadata": {"name": notebook_path.stem, "path": str(notebook_path.parent.resolve())},
    }
    try:
        body, _ = exporter.from_notebook_node(nb, resources=resources)
    except Exception as exc:
        raise ReportError(f"HTML export of {notebook_path} failed: {type(exc).__name__}: {exc}") from exc
    return for_print(body) if for_pdf else for_screen(body)


def _atomic_write_text(path: Path, text: str | bytes) -> None:
    """Through a new temporary file (mkstemp: never an existing one, never through a link),
    then renamed: no half-written report, and a link at `path` is replaced, not followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8") if isinstance(text, str) else text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- public API


def export_html(
    notebook_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    hide_input: bool = True,
    *,
    mathjax_url: str | None = None,
) -> Path:
    """Export one notebook to a self-contained HTML report and return its path.

    ``out_path`` defaults to ``<notebook dir>/<stem>.html``.  With ``hide_input`` (default)
    code cells' source and all ``In []`` / ``Out []`` prompts are left out; markdown and
    outputs stay.  Cell tags (see module docstring) are honoured either way.
    """
    notebook_path = Path(notebook_path)
    out = Path(out_path) if out_path is not None else _default_out(notebook_path, ".html")
    html = _render_html(notebook_path, hide_input, mathjax_url)
    _atomic_write_text(out, html)
    return out


def export_pdf(
    notebook_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    hide_input: bool = True,
    *,
    mathjax_url: str | None = None,
    timeout: float | None = None,
) -> Path:
    """Export one notebook to PDF (HTML report printed by headless Chromium).

    ``out_path`` defaults to ``<notebook dir>/<stem>.pdf``.  Raises
    :class:`ReportToolMissingError` naming ``make pdf-deps`` / ``scripts/install_pdf_deps.sh``
    when Chromium is not installed.  ``timeout`` (seconds, default 180 or
    ``FEDPRUNE_PDF_TIMEOUT``) bounds one print.
    """
    notebook_path = Path(notebook_path)
    out = Path(out_path) if out_path is not None else _default_out(notebook_path, ".pdf")
    timeout = pdf_timeout(timeout)
    exe = chromium.require()
    html = _render_html(notebook_path, hide_input, mathjax_url, for_pdf=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = chromium.print_pdf(exe, html, notebook_path, timeout, mathjax_url)
    _atomic_write_text(out, data)  # no half-written PDF on failure
    return out


def export_reports(
    paths: Iterable[str | os.PathLike],
    fmt: str = "html",
    hide_input: bool = True,
    *,
    mathjax_url: str | None = None,
) -> list[Path]:
    """Export many notebooks (each beside itself); return the report paths in input order.

    Every notebook is attempted; if any fail, a :class:`ReportError` listing all failures is
    raised at the end.  A missing PDF tool is reported at once, before any work.
    """
    fmt = _check_format(fmt)
    paths = [Path(p) for p in paths]
    if fmt == "pdf":
        pdf_timeout()
        chromium.require()
    export = export_html if fmt == "html" else export_pdf
    done: list[Path] = []
    failures: list[str] = []
    for nb_path in paths:
        try:
            done.append(export(nb_path, hide_input=hide_input, mathjax_url=mathjax_url))
        except ReportToolMissingError:
            raise
        except (ReportError, OSError) as exc:  # OSError: a read-only folder, a full disk
            if len(paths) == 1:  # its own message, not a list of one
                raise ReportError(_os_error(exc)) from exc
            failures.append(f"{nb_path}: {_os_error(exc)}")
    if failures:
        raise ReportError(
            f"{len(failures)} of {len(paths)} {fmt.upper()} report(s) failed:\n" + "\n".join(failures)
        )
    return done


# --------------------------------------------------------------------------- CLI


def _expand(args: Sequence[str], skip_missing: bool) -> list[Path]:
    """Existing paths as given; unmatched args with glob characters are globbed here
    (so the Makefile can pass patterns that the shell left unexpanded)."""
    found: list[Path] = []
    for arg in args:
        if Path(arg).exists():
            found.append(Path(arg))
            continue
        matches = sorted(glob.glob(arg)) if glob.has_magic(arg) else []
        if matches:
            found.extend(Path(m) for m in matches)
        elif not skip_missing:
            raise FileNotFoundError(f"notebook not found: {arg}")
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedprune_core.tools.reports",
        description="Export executed notebooks to self-contained HTML or PDF reports "
        "(written beside each notebook as <stem>.html / <stem>.pdf).",
    )
    parser.add_argument("format", choices=("html", "pdf"), help="report format")
    parser.add_argument("notebooks", nargs="+", metavar="NOTEBOOK",
                        help="notebook paths (glob patterns allowed)")
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="output file (only with a single notebook)")
    parser.add_argument("--show-input", action="store_true",
                        help="include code cells' source and prompts (hidden by default)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="ignore paths/patterns that match no file "
                        "(fail only if nothing at all is left)")
    parser.add_argument("--mathjax-url", metavar="URL",
                        help="MathJax URL, e.g. a local copy (default: env FEDPRUNE_MATHJAX_URL; "
                        "without one, math stays as $...$ and nothing is loaded from the network)")
    args = parser.parse_args(argv)

    try:
        notebooks = _expand(args.notebooks, args.skip_missing)
        if not notebooks:
            print(f"reports: no notebooks found matching: {' '.join(args.notebooks)} "
                  "(execute the experiment / analysis notebooks first)", file=sys.stderr)
            return 1
        if args.output and len(notebooks) != 1:
            parser.error("--output needs exactly one notebook")
        hide = not args.show_input
        if args.output:
            export = export_html if args.format == "html" else export_pdf
            outs = [export(notebooks[0], args.output, hide, mathjax_url=args.mathjax_url)]
        else:
            outs = export_reports(notebooks, args.format, hide, mathjax_url=args.mathjax_url)
    except (ReportError, OSError) as exc:
        print(f"reports: error: {_os_error(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, ReportToolMissingError) else 1
    except ValueError as exc:  # ConfigError: a setting such as FEDPRUNE_PDF_TIMEOUT
        print(f"reports: error: {exc}", file=sys.stderr)
        return 2
    for out in outs:
        print(os.fsencode(out).decode("utf-8", "backslashreplace"))
    return 0


def _os_error(exc: Exception) -> str:
    """An OSError as one line naming its file ('[Errno 13] ...' says less)."""
    if isinstance(exc, OSError) and not isinstance(exc, ReportError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return str(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
