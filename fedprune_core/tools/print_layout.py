"""The PDF route's print layout: A4 pages a reader can read, from nbconvert's HTML report.

Tables print in 8 pt type, never smaller: one too wide for the portrait page goes on landscape
pages, one too wide for those is split between its columns. Checked by looking at every page of
`make report-pdf`'s output (pdftoppm, then the images) and by the tests reading the PDF back
(tests/pdf_checks.py: type sizes, page sizes, the tables' text).
"""

from __future__ import annotations

import html
import re

# Print layout for the PDF route (A4). What a reader would notice otherwise: tables wider than
# the page cut at the right margin (paper cannot scroll sideways), a figure split over two
# pages, a heading or a figure's caption alone at the bottom of a page, its content on the next.
PRINT_CSS = """
@page { size: A4; margin: 12mm 10mm; }
@page landscape { size: A4 landscape; margin: 12mm 10mm; }
@media print {
  body { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  /* A figure at the size the notebook gives it (its printed size: the same type size in
     every figure), at most the page's width and 105 mm tall, so two, each with its heading
     and caption, share a page rather than each leaving half a page blank after it; shrunk to
     that height it keeps its proportions, drawn from the left. */
  .jp-OutputArea-output img {
    max-width: 100% !important; max-height: 105mm !important; height: auto !important;
    object-fit: contain; object-position: left top;
  }
  .jp-OutputArea-output img, .jp-RenderedImage { break-inside: avoid; page-break-inside: avoid; }
  /* Wrap long code and text-output lines instead of cutting them. */
  pre, .highlight pre, .jp-OutputArea-output pre {
    white-space: pre-wrap !important; overflow-wrap: anywhere; word-break: break-word;
  }
  .jp-InputArea-editor, .jp-OutputArea-output, .jp-RenderedHTMLCommon, .highlight {
    overflow: visible !important;
  }
  /* Tables in 8 pt type (print's smallest readable size), cells that wrap between words
     (a column name breaks after an underscore, see for_print; never inside a word). A table
     too wide for the portrait page prints on landscape pages (for_print marks it). */
  .jp-RenderedHTMLCommon table {
    table-layout: auto !important; width: auto; max-width: 100%; font-size: 8pt !important;
    margin-left: 0; margin-right: auto;
  }
  .jp-RenderedHTMLCommon th, .jp-RenderedHTMLCommon td {
    padding: 1px 3px !important; white-space: normal !important; max-width: none;
  }
  .jp-RenderedHTMLCommon th { overflow-wrap: break-word; }
  .landscape { page: landscape; }
  /* the second part of a table split between its columns (for_print) */
  .jp-RenderedHTMLCommon table.table-part { margin-top: 8pt; }
  /* the footnotes under a table (what its marks mean), on the page of its last rows */
  .jp-RenderedHTMLCommon table ~ p { font-size: 8pt; }
  .jp-RenderedHTMLCommon table + p { break-before: avoid; page-break-before: avoid; }
  .jp-RenderedHTMLCommon thead { display: table-header-group; }
  .jp-RenderedHTMLCommon tr { break-inside: avoid; page-break-inside: avoid; }
  /* Keep headings and captions with what follows them (see for_print). */
  .keep-with-next { break-inside: avoid; page-break-inside: avoid; }
  h1, h2, h3, h4, h5, h6 { break-after: avoid; page-break-after: avoid; }
  .jp-OutputArea-child:has(.jp-RenderedMarkdown):not(:last-child) {
    break-after: avoid; page-break-after: avoid;  /* a caption stays with its figure */
  }
  .jp-OutputArea-child:has(img) { break-inside: avoid; page-break-inside: avoid; }
  /* A long table may continue on the next page (nbconvert's print CSS keeps every output
     whole, moving a table taller than what is left of a page, and its heading, to the next
     one); its heading stays with its first rows. */
  .keep-heading .jp-OutputArea-child { break-inside: auto; page-break-inside: auto; }
  .keep-heading > .jp-MarkdownCell { break-after: avoid; page-break-after: avoid; }
}
"""


LONG_TABLE_ROWS = 12  # a table with more rows may start on one page and go on on the next
_CELL_START = re.compile(r'(?=<div class="jp-Cell )')
# The text width of an A4 page inside PRINT_CSS's margins (points), portrait and landscape.
PORTRAIT_PT, LANDSCAPE_PT = (210 - 20) / 25.4 * 72, (297 - 20) / 25.4 * 72
TABLE_PT = 8.0  # PRINT_CSS's table type size
_TABLE = re.compile(r"<table\b.*?</table>", re.S)
_ROW = re.compile(r"<tr\b.*?</tr>", re.S)
_TABLE_CELL = re.compile(r"<(t[hd])\b[^>]*>(.*?)</t[hd]>", re.S)
_FULL_CELL = re.compile(r"<t[hd]\b[^>]*>.*?</t[hd]>", re.S)
_NARROW = set(".,:;()[]|'!iljt \u00a0")  # about half a digit's width in DejaVu Sans


def for_print(body: str) -> str:
    """The HTML report, made printable: the print CSS added, and what CSS cannot do done here.

    Each markdown cell is grouped with the code cell after it (`keep-with-next`, not split by
    the print CSS), so a heading never ends a page while its table or figure starts the next:
    Chromium ignores `break-after: avoid` between these cells. A part holding a table wider
    than the portrait page at 8 pt (table_width) goes on landscape pages of its own
    (`landscape`); one wider than those is split between its columns (split_columns). Names
    like avg_transmitted_ratio in table cells may wrap after an underscore, a cell of at most
    SHORT_CELL characters stays on one line.
    """
    start, end = body.find("<main>"), body.rfind("</main>")
    if start >= 0 and end > start:
        start += len("<main>")
        cells, grouped, i = _CELL_START.split(body[start:end]), [], 0
        while i < len(cells):
            j = i + 1  # through the next cell that shows something (not a parameters cell)
            while j < len(cells) and "jp-mod-noOutputs" in cells[j][:200]:
                j += 1
            if "jp-MarkdownCell" in cells[i][:100] and j < len(cells) \
                    and "jp-CodeCell" in cells[j][:100]:
                tall = cells[j].count("<tr") > LONG_TABLE_ROWS
                keep = "keep-heading" if tall else "keep-with-next"
                grouped.append(_orient(f'<div class="{keep}">{"".join(cells[i:j + 1])}</div>'))
                i = j + 1
            else:
                grouped.append(_orient(cells[i]))
                i += 1
        body = body[:start] + "".join(grouped) + body[end:]
    body = body.replace("</head>", f'<style type="text/css">{PRINT_CSS}</style>\n</head>', 1)
    # folded sections (the run report's parameters) print open: paper cannot be clicked
    body = re.sub(r"<details(?![^>]*\bopen\b)", "<details open", body)
    return re.sub(r"(<(t[hd])[^>]*>)([^<]*)(</t[hd]>)",
                  lambda m: m[1] + _cell(m[3], m[2]) + m[4], body)


def _orient(part: str) -> str:
    """`part` of the report, inside a landscape page when a table in it is wider than the
    portrait page allows; a table wider than a landscape page, too, split (split_columns)."""
    tables = _TABLE.findall(part)
    if max(map(table_width, tables), default=0.0) <= PORTRAIT_PT:
        return part
    for table in (t for t in tables if table_width(t) > LANDSCAPE_PT):
        part = part.replace(table, split_columns(table, LANDSCAPE_PT), 1)
    return f'<div class="landscape">{part}</div>'


def table_width(table: str, size_pt: float = TABLE_PT) -> float:
    """The narrowest an HTML table prints at `size_pt` without breaking inside a word (points,
    an estimate a little on the wide side): the sum of column_widths."""
    return sum(column_widths(table, size_pt))


def column_widths(table: str, size_pt: float = TABLE_PT) -> list[float]:
    """Per column of an HTML table, the narrowest it prints at `size_pt` without breaking
    inside a word (points): its widest unbreakable piece, a bold header's or a cell's, at
    DejaVu Sans' widths, plus the cell's padding."""
    columns: dict[int, float] = {}
    for row in _ROW.findall(table):
        for i, (tag, text) in enumerate(_TABLE_CELL.findall(row)):
            pieces = _unbreakable(text, tag)
            em = max((sum(0.34 if c in _NARROW else 0.72 if c.isupper() else 0.63 for c in p)
                      for p in pieces), default=0.0) * (1.08 if tag == "th" else 1.0)
            columns[i] = max(columns.get(i, 0.0), em * size_pt + 6.0)
    return [columns[i] for i in sorted(columns)]


def split_columns(table: str, width_pt: float) -> str:
    """`table` as tables one under the other, each its first column (the row's name) and as
    many of the next columns as fit `width_pt`: a table too wide for any page is split
    between columns rather than its words broken or its last columns cut."""
    widths = column_widths(table)
    parts = _pack(widths, width_pt)
    if len(parts) > 1:  # as many parts, of about equal widths (not a last one of one column)
        rest = widths[1:]
        parts = _pack(widths, min(width_pt, widths[0] + sum(rest) / len(parts) + max(rest)))
    rows = [_FULL_CELL.findall(row) for row in _ROW.findall(table)]
    out = []
    for k, columns in enumerate(parts):
        lines = ["<tr>" + row[0] + "".join(row[i] for i in columns if i < len(row)) + "</tr>"
                 for row in rows]
        head = [line for line, row in zip(lines, rows) if row and row[0].startswith("<th")]
        body = [line for line, row in zip(lines, rows) if row and not row[0].startswith("<th")]
        opening = '<table class="table-part">' if k else "<table>"
        out.append(f'{opening}<thead>{"".join(head)}</thead><tbody>{"".join(body)}</tbody>'
                   f'</table>')
    return "\n".join(out)


def _pack(widths: list[float], width_pt: float) -> list[list[int]]:
    """Columns 1, 2, ... in order into parts that fit `width_pt` beside column 0."""
    parts, current, used = [], [], widths[0]
    for i, width in enumerate(widths[1:], start=1):
        if current and used + width > width_pt:
            parts.append(current)
            current, used = [], widths[0]
        current.append(i)
        used += width
    return parts + [current]


def _unbreakable(text: str, tag: str = "td") -> list[str]:
    """The pieces of a cell's text a line cannot break inside: words, and what _cell keeps
    together; broken after an underscore and a hyphen."""
    text = html.unescape(re.sub(r"<[^>]+>", "", _cell(text, tag).replace("_<wbr>", "_ ")))
    return [p for p in re.split(r"[ \t\n]+|(?<=-)(?=[A-Za-z])", text) if p]


SHORT_CELL = 20  # characters: a table cell this short is printed on one line


def _cell(text: str, tag: str = "td") -> str:
    """A table cell's text: a short one (a number, "not reached (0/2)", a run's name) on one
    line; a longer one may break between words and after underscores; "mean ± CI" and a
    number with its mark (tables.WARMUP_MARK, FEW_SEEDS_MARK) are kept on one line."""
    if tag == "td" and len(html.unescape(text)) <= SHORT_CELL:
        return text.replace(" ", "\u00a0")
    return _joined(text).replace("_", "_<wbr>")


def _joined(text: str) -> str:
    """"mean ± CI", and a number with its mark, joined by no-break spaces."""
    text = text.replace(" ± ", "\u00a0±\u00a0")
    for mark in ("†", "‡"):  # tables.WARMUP_MARK, FEW_SEEDS_MARK
        text = text.replace(f" {mark}", f"\u00a0{mark}")
    return text


# The HTML report on a screen: a table of 12 columns or more (the runs table has 18) in
# smaller type, so it fits a laptop's window; its headers break between words, never inside
# one ("Se/ed/s"): a table wider than the window scrolls instead.
SCREEN_CSS = """
.jp-RenderedHTMLCommon table:has(th:nth-child(12)) { font-size: 11px; }
.jp-RenderedHTMLCommon table:has(th:nth-child(12)) :is(th, td) { padding: 2px 4px; }
.jp-RenderedHTMLCommon th { overflow-wrap: normal; word-break: normal; }
"""


def for_screen(body: str) -> str:
    """The HTML report: wide tables in smaller type (SCREEN_CSS), and "mean ± CI" (a number and
    its mark) on one line in table cells (a narrow column otherwise breaks it into "91.45",
    "±", "9.43")."""
    body = body.replace("</head>", f'<style type="text/css">{SCREEN_CSS}</style>\n</head>', 1)
    return re.sub(r"(<td[^>]*>)([^<]*)(</td>)", lambda m: m[1] + _joined(m[2]) + m[3], body)
