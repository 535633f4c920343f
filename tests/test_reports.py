"""Tests for fedprune_core.tools.reports (HTML / PDF export of executed notebooks)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbclient
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from fedprune_core.tools import reports
from fedprune_core.tools.reports import (
    ReportError,
    ReportToolMissingError,
    export_html,
    export_pdf,
    export_reports,
    find_chromium,
)

# Markers: *_SRC only ever appear in cell sources, *_OUT only in outputs.
PRINTED_OUT = "fedprune-report-printed-text-3141"
PRINTED_SRC = "printed_source_marker_2718"
HIDDEN_SRC = "hidden_cell_marker_1618"
HIDDEN_OUT = "HIDDEN-CELL-OUTPUT-1618"
RMINPUT_SRC = "removed_input_marker_1414"
RMINPUT_OUT = "KEPT-OUTPUT-OF-REMOVE-INPUT-1414"
FIGURE_SRC = "figure_source_marker_1732"
HEADING = "FedPrune test report heading"


def _build_notebook() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        new_markdown_cell(f"# {HEADING}\n\nSome *markdown* text describing the run."),
        new_code_cell(f"{HIDDEN_SRC} = 1\nprint('{HIDDEN_OUT}')", metadata={"tags": ["hide"]}),
        new_code_cell(
            f"{RMINPUT_SRC} = 'KEPT-OUTPUT-OF-' + 'REMOVE-INPUT-1414'\nprint({RMINPUT_SRC})",
            metadata={"tags": ["remove-input"]},
        ),
        new_code_cell(
            f"{PRINTED_SRC} = '-'.join(['fedprune', 'report', 'printed', 'text', '3141'])\n"
            f"print({PRINTED_SRC})"
        ),
        new_code_cell(
            "import matplotlib\n"
            "import matplotlib.pyplot as plt\n"
            f"{FIGURE_SRC} = [0.9, 0.6, 0.45, 0.4, 0.38]\n"
            "fig, ax = plt.subplots(figsize=(5, 3))\n"
            f"ax.plot(range(1, 6), {FIGURE_SRC}, marker='o', label='loss')\n"
            "ax.set_xlabel('round'); ax.set_ylabel('loss'); ax.set_title('Training loss'); ax.legend()\n"
            "plt.show()"
        ),
    ]
    return nb


@pytest.fixture(scope="module")
def executed_nb(tmp_path_factory) -> Path:
    """The test notebook, executed with the venv's `python3` kernel."""
    d = tmp_path_factory.mktemp("report_nb")
    nb = _build_notebook()
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(d)}}
    )
    client.execute()
    path = d / "experiment.ipynb"
    nbformat.write(nb, path)
    return path


def _html_text(path: Path) -> str:
    assert path.is_file(), f"{path} was not written"
    return path.read_text(encoding="utf-8")


def test_notebook_executed_with_png(executed_nb):
    nb = nbformat.read(executed_nb, as_version=4)
    mimes = {m for c in nb.cells if c.cell_type == "code" for o in c.outputs for m in o.get("data", {})}
    assert "image/png" in mimes


def test_html_hides_input_by_default(executed_nb):
    out = export_html(executed_nb)
    assert out == executed_nb.with_suffix(".html")  # beside the notebook, <stem>.html
    html = _html_text(out)
    assert HEADING in html
    assert PRINTED_OUT in html
    assert re.search(r'src="data:image/png;base64,[A-Za-z0-9+/=\s]{500,}"', html), "no embedded PNG"
    for src in (PRINTED_SRC, FIGURE_SRC, RMINPUT_SRC, HIDDEN_SRC):
        assert src not in html, f"code source {src!r} leaked into the hidden-input report"
    assert "In&nbsp;[" not in html and "In [" not in html  # prompts hidden
    assert "require.min.js" not in html  # no blocking CDN script in the self-contained report
    # tags: `hide` drops the whole cell, `remove-input` keeps the output
    assert HIDDEN_OUT not in html
    assert RMINPUT_OUT in html


def test_html_shows_input_when_asked(executed_nb, tmp_path):
    out = export_html(executed_nb, tmp_path / "sub" / "with_code.html", hide_input=False)
    assert out == tmp_path / "sub" / "with_code.html"
    html = _html_text(out)
    assert PRINTED_SRC in html and FIGURE_SRC in html
    assert PRINTED_OUT in html
    assert "data:image/png;base64," in html
    # tags are honoured also when inputs are shown
    assert HIDDEN_SRC not in html and HIDDEN_OUT not in html
    assert RMINPUT_SRC not in html and RMINPUT_OUT in html


def test_html_survives_broken_widget_state(tmp_path):
    """Widget outputs/state (e.g. tqdm.auto bars) must not break or clutter the export."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # Missing the required "state" key: nbformat-invalid, which nbconvert would reject.
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"version_major": 2}}
    widget = new_output(
        "display_data",
        data={
            "application/vnd.jupyter.widget-view+json": {
                "model_id": "abc123", "version_major": 2, "version_minor": 0,
            },
            "text/plain": "  0%|          | 0/10 [00:00<?, ?it/s]",
        },
    )
    text = new_output("stream", name="stdout", text="after-the-widget-output\n")
    nb.cells = [new_code_cell("bar()", outputs=[widget, text], execution_count=1)]
    path = tmp_path / "widgets.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")  # bypass nbformat's validation on write

    html = _html_text(export_html(path))
    assert "after-the-widget-output" in html
    assert "widget-view+json" not in html
    assert "widget-state+json" not in html


def test_export_reports_and_cli(executed_nb, tmp_path, capsys):
    outs = export_reports([executed_nb], fmt="html")
    assert outs == [executed_nb.with_suffix(".html")]
    with pytest.raises(ValueError):
        export_reports([executed_nb], fmt="docx")
    with pytest.raises(ReportError, match="1 of 2"):
        export_reports([executed_nb, tmp_path / "missing.ipynb"], fmt="html")

    # CLI: patterns left unexpanded by the shell are globbed; --skip-missing ignores non-matches
    pattern = str(executed_nb.parent / "*.ipynb")
    rc = reports.main(["html", "--skip-missing", str(tmp_path / "nope" / "analysis.ipynb"), pattern])
    assert rc == 0
    assert str(executed_nb.with_suffix(".html")) in capsys.readouterr().out
    assert reports.main(["html", str(tmp_path / "nope.ipynb")]) == 1
    assert reports.main(["html", "--skip-missing", str(tmp_path / "nope" / "*.ipynb")]) == 1
    out = tmp_path / "cli.html"
    assert reports.main(["html", "--show-input", "-o", str(out), str(executed_nb)]) == 0
    assert PRINTED_SRC in _html_text(out)


def test_pdf_missing_tool_error_names_installer(executed_nb, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDPRUNE_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(ReportToolMissingError) as exc:
        export_pdf(executed_nb, tmp_path / "x.pdf")
    msg = str(exc.value)
    assert "chromium" in msg.lower()
    assert "make pdf-deps" in msg and "scripts/install_pdf_deps.sh" in msg
    assert not (tmp_path / "x.pdf").exists()
    assert reports.main(["pdf", str(executed_nb)]) == 2


def _pdf_page_count(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


def test_pdf_export(executed_nb, tmp_path):
    if find_chromium() is None:
        pytest.skip(
            "optional system dependency missing: headless Chromium (Debian package 'chromium'); "
            "install with `make pdf-deps` / scripts/install_pdf_deps.sh"
        )
    out = export_pdf(executed_nb)
    assert out == executed_nb.with_suffix(".pdf")
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    assert _pdf_page_count(data) > 0

    out2 = export_pdf(executed_nb, tmp_path / "code.pdf", hide_input=False)
    data2 = out2.read_bytes()
    assert data2.startswith(b"%PDF") and _pdf_page_count(data2) > 0


# --------------------------------------------------------------------------- offline, print layout

WIDE_COLUMNS = [f"column_number_{i:02d}" for i in range(14)]


def _wide_table_notebook(tmp_path: Path) -> Path:
    """A 14-column table (like the analysis' runs table) and a heading before a figure."""
    header = "| run_name | " + " | ".join(WIDE_COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(WIDE_COLUMNS)
    rows = [f"| sparsification_only_topk_s{r} | " + " | ".join(f"{r * 100 + i}.25"
                                                            for i in range(14)) + " |"
            for r in range(5)]
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    png = new_output("display_data", data={"image/png": _TINY_PNG, "text/plain": "<Figure>"})
    nb.cells = [new_markdown_cell("# Wide\n\n" + "\n".join([header, rule, *rows])),
                new_markdown_cell("## Heading kept with its figure"),
                new_code_cell("show()", outputs=[png], execution_count=1)]
    path = tmp_path / "wide.ipynb"
    nbformat.write(nb, path)
    return path


_TINY_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
             "RU5ErkJggg==")


def test_html_report_loads_nothing_from_the_network(executed_nb, tmp_path):
    """No MathJax, mermaid or require.js from a CDN: the report is the same offline."""
    html = _html_text(export_html(executed_nb, tmp_path / "offline.html"))
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', html)
    for cdn in ("mathjax", "mermaid", "require.min.js", "cdnjs", "unpkg", "jsdelivr"):
        assert cdn not in html.lower(), cdn
    with_math = _html_text(export_html(executed_nb, tmp_path / "math.html",
                                       mathjax_url="file:///opt/mathjax/MathJax.js"))
    assert "file:///opt/mathjax/MathJax.js" in with_math  # an explicit local copy is used


def test_print_html_keeps_headings_with_their_content_and_lets_names_wrap(tmp_path):
    html = reports._render_html(_wide_table_notebook(tmp_path), True, None, for_pdf=True)
    group = html.split('<div class="keep-with-next">')[1]
    assert "Heading kept with its figure" in group and "data:image/png" in group
    assert "column_<wbr>number_<wbr>00" in html and "sparsification_<wbr>only_" in html
    assert ".keep-with-next { break-inside: avoid" in html
    # 15 columns do not fit the portrait page at 8 pt: that cell prints on a landscape page,
    # the heading and its figure stay portrait
    assert html.count('<div class="landscape">') == 1
    wide = html.split('<div class="landscape">')[1].split('<div class="keep-with-next">')[0]
    assert "column_<wbr>number_<wbr>13" in wide and "Heading kept" not in html.split(
        '<div class="landscape">')[0]
    assert "page: landscape" in html and "@page landscape { size: A4 landscape" in html


def test_a_table_goes_landscape_only_when_the_portrait_page_is_too_narrow():
    """print_layout.table_width: the narrowest a table prints at 8 pt without breaking a word;
    a table wider than a landscape page is split between its columns, its first one in each."""
    from fedprune_core.tools.print_layout import (LANDSCAPE_PT, PORTRAIT_PT, for_print,
                                                  split_columns, table_width)

    def table(columns: int, cell: str, header: str = "N") -> str:
        return ("<table><thead><tr>" + "".join(f"<th>{header}{i}</th>" for i in range(columns))
                + "</tr></thead><tbody><tr>" + f"<td>{cell}</td>" * columns
                + "</tr></tbody></table>")
    # a digit 0.63 em, a capital 0.72, a bold header 8% wider, 6 pt of padding a cell
    assert table_width(table(1, "12345")) == pytest.approx(5 * 0.63 * 8 + 6)
    assert table_width(table(1, "1", "Seeds")) == pytest.approx(
        (0.72 + 4 * 0.63 + 0.63) * 1.08 * 8 + 6)  # "Seeds0" is wider than its "1"
    assert table_width(table(4, "93.00 ± 12.71 †")) < PORTRAIT_PT  # a methods table's cells
    assert table_width(table(13, "93.00 ± 12.71 †")) > PORTRAIT_PT
    # a long label breaks between words: its longest word counts
    assert table_width(table(1, "Hybrid(structured 0.4 adaptive + cost_weighted 0.95)")) == \
        pytest.approx(table_width(table(1, "Hybrid(structured")))

    def page(body: str) -> str:
        return f"<html><head></head><body><main>{body}</main></body></html>"
    assert '<div class="landscape">' not in for_print(page(table(4, "93.00 ± 12.71 †")))
    assert '<div class="landscape">' in for_print(page(table(13, "93.00 ± 12.71 †")))
    # wider than a landscape page: split. A cell is 8.0 em ("." and spaces 0.34), 70 pt with
    # its padding, so beside the first column 10 more fit a part: 29 in 10, 10 and 9
    cell = "93.00 ± 12.71 †"
    assert table_width(table(1, cell)) == pytest.approx(8.0 * 8 + 6)
    parts = split_columns(table(30, cell), LANDSCAPE_PT).split("</table>")[:-1]
    assert [re.findall(r"<th>N(\d+)</th>", part) for part in parts] == [
        ["0", *map(str, range(1, 11))], ["0", *map(str, range(11, 21))],
        ["0", *map(str, range(21, 30))]]
    assert all(table_width(part + "</table>") <= LANDSCAPE_PT for part in parts)
    assert all(part.count("<td>") == len(re.findall("<th>", part)) for part in parts)


def test_pdf_fits_a_wide_table_on_the_page(tmp_path):
    """The runs table lost 9 of its 14 columns at the right margin: every column is printed."""
    import shutil
    import subprocess

    if find_chromium() is None or shutil.which("pdftotext") is None:
        pytest.skip("needs headless Chromium (make pdf-deps) and pdftotext (poppler-utils)")
    pdf = export_pdf(_wide_table_notebook(tmp_path))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True).stdout
    for r in range(5):
        assert f"{r * 100 + 13}.25" in text, f"row {r}: the last column is cut"
    from pdf_checks import blank_pages, font_sizes, page_sizes

    # the table on a landscape page in 8 pt type (not shrunk to 5.5 pt), the figure portrait
    assert page_sizes(pdf) == [(841.92, 594.96), (594.96, 841.92)]
    assert min(size for _, size, _ in font_sizes(pdf)) >= 8
    assert blank_pages(pdf) == []


# --------------------------------------------------------------------------- a report-shaped PDF

def _figure_png(width: int, height: int, shade: int) -> str:
    """A base64 PNG of a figure's size at 300 DPI (a frame and a diagonal, so it prints ink)."""
    import base64
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, width - 40, height - 40), outline=(shade, 60, 120), width=12)
    draw.line((40, height - 40, width - 40, 40), fill=(shade, 60, 120), width=12)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", dpi=(300, 300))
    return base64.b64encode(buffer.getvalue()).decode()


REPORT_HEADINGS = [f"Section {name}" for name in
                   ("one table", "two figure", "three figure", "four long table",
                    "five figure", "six figure", "seven figure")]


def _report_notebook(tmp_path: Path) -> Path:
    """What the analysis report holds, in the order that broke it: a 13-column table, figures
    of 2100 px at 300 DPI (each a heading and a caption before it), a 30-row table of 18
    columns, more figures."""
    def table(rows: int, columns: int, tag: str) -> str:
        head = "| Method | " + " | ".join(f"Column_{c}" for c in range(columns - 1)) + " |"
        rule = "|---|" + "---:|" * (columns - 1)
        body = [f"| Hybrid(structured 0.4 adaptive + cost_weighted 0.95) {tag}{r} | "
                + " | ".join(f"{r}.{c:02d}" for c in range(columns - 2)) + f" | END{tag}{r} |"
                for r in range(rows)]
        return "\n".join([head, rule, *body])

    def figure(k: int):
        data = {"image/png": _figure_png(2100, 1500 + 37 * k, 40 * k), "text/plain": "<Image>"}
        return new_output("display_data", data=data,
                          metadata={"image/png": {"width": 700, "alt": f"figure {k}"}})

    cells, k = [], 0
    for heading in REPORT_HEADINGS:
        cells.append(new_markdown_cell(f"## {heading}\n\nA caption of two lines, about what "
                                       f"follows, as the notebooks write them before each output."))
        if "table" in heading:
            tall = "long" in heading
            md = new_output("display_data", data={"text/markdown": table(
                30 if tall else 12, 18 if tall else 13, "L" if tall else "S"),
                "text/plain": "<Markdown>"})
            cells.append(new_code_cell("show_table()", outputs=[md], execution_count=1))
        else:
            k += 1
            cells.append(new_code_cell("show_figure()", outputs=[figure(k)], execution_count=1))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "report.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_report_pdf_keeps_its_promises_read_back_page_by_page(tmp_path):
    """Every column printed, no figure split over two pages, no heading alone at the foot of
    a page, no blank page, no page left mostly empty for want of a figure that would fit."""
    import shutil

    from pdf_checks import (blank_pages, font_sizes, headings_ending_a_page, page_sizes,
                            pages_text, split_images)

    if find_chromium() is None or shutil.which("pdftotext") is None:
        pytest.skip("needs headless Chromium (make pdf-deps) and poppler-utils")
    pdf = export_pdf(_report_notebook(tmp_path))
    pages = pages_text(pdf)
    text = "\n".join(pages)
    for tag, rows in (("S", 12), ("L", 30)):
        for r in range(rows):
            assert f"END{tag}{r}" in text, f"table {tag} row {r}: its last column is cut"
    assert split_images(pdf) == []
    assert blank_pages(pdf) == []
    assert headings_ending_a_page(pages, REPORT_HEADINGS) == []
    # 5 figures at most about half a page each, two tables: not one page each
    assert len(pages) <= 6, len(pages)
    # the tables in 8 pt type or more, on landscape pages, their headers' words whole; the
    # figures on portrait pages
    assert min(size for _, size, _ in font_sizes(pdf)) >= 8
    landscape = [width > height for width, height in page_sizes(pdf)]
    for text, wide in zip(pages, landscape):
        assert wide == ("ENDS0" in text or "ENDL" in text), text[:200]
        if wide:  # the 18 columns do not fit even so: split in two, each with its Method
            assert "Column_" in text and not re.search(r"Colum(?!n_)", text), text
    nb = nbformat.read(tmp_path / "report.ipynb", as_version=4)
    html = reports._render_html(tmp_path / "report.ipynb", True, None)
    assert html.count('alt="figure ') == 5  # the outputs' alternative text is kept
    assert "No description has been provided" not in html
    assert len(nb.cells) == 14
