"""The PDF route's print layout: A4 pages a reader can read, from nbconvert's HTML report.

Checked by looking at every page of `make report-pdf`'s output (pdftoppm, then the images).
"""

from __future__ import annotations

import re

# Print layout for the PDF route (A4). What a reader would notice otherwise: tables wider than
# the page cut at the right margin (paper cannot scroll sideways), a figure split over two
# pages, a heading or a figure's caption alone at the bottom of a page, its content on the next.
PRINT_CSS = """
@page { size: A4; margin: 12mm 10mm; }
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
  /* Wide tables shrink to the page: small type, cells that wrap (long column names too). */
  .jp-RenderedHTMLCommon table {
    table-layout: auto !important; width: auto; max-width: 100%; font-size: 8pt !important;
    margin-left: 0; margin-right: auto;
  }
  .jp-RenderedHTMLCommon th, .jp-RenderedHTMLCommon td {
    padding: 1px 4px !important; white-space: normal !important; max-width: none;
  }
  /* Column names break after an underscore (see for_print). */
  .jp-RenderedHTMLCommon th { overflow-wrap: break-word; }
  .jp-RenderedHTMLCommon table:has(th:nth-child(9)) { font-size: 7pt !important; }
  .jp-RenderedHTMLCommon table:has(th:nth-child(12)) { font-size: 6pt !important; }
  .jp-RenderedHTMLCommon table:has(th:nth-child(12)) :is(th, td) { padding: 1px 2px !important; }
  /* From 12 columns a header may break anywhere (its numbers are narrower than its words);
     from 16 the type is smaller still: 18 columns of a runs table fit the A4 width. */
  .jp-RenderedHTMLCommon table:has(th:nth-child(12)) th { overflow-wrap: anywhere; }
  .jp-RenderedHTMLCommon table:has(th:nth-child(16)) { font-size: 5.5pt !important; }
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


def for_print(body: str) -> str:
    """The HTML report, made printable: the print CSS added, and what CSS cannot do done here.

    Each markdown cell is grouped with the code cell after it (`keep-with-next`, not split by
    the print CSS), so a heading never ends a page while its table or figure starts the next:
    Chromium ignores `break-after: avoid` between these cells. Names like avg_transmitted_ratio
    in table cells may wrap after an underscore, so a wide table fits the page width.
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
                grouped.append(f'<div class="{"keep-heading" if tall else "keep-with-next"}">'
                               f'{"".join(cells[i:j + 1])}</div>')
                i = j + 1
            else:
                grouped.append(cells[i])
                i += 1
        body = body[:start] + "".join(grouped) + body[end:]
    body = body.replace("</head>", f'<style type="text/css">{PRINT_CSS}</style>\n</head>', 1)
    # folded sections (the run report's parameters) print open: paper cannot be clicked
    body = re.sub(r"<details(?![^>]*\bopen\b)", "<details open", body)
    return re.sub(r"(<t[hd][^>]*>)([^<]*)(</t[hd]>)", lambda m: m[1] + _cell(m[2]) + m[3], body)


def _cell(text: str) -> str:
    """A table cell's text: break opportunities after underscores; "mean ± CI" kept on one
    line."""
    return text.replace("_", "_<wbr>").replace(" ± ", "\u00a0±\u00a0")


# The HTML report on a screen: a table of 12 columns or more (the runs table has 18) in
# smaller type, its headers free to break, so it fits a laptop's window without scrolling.
SCREEN_CSS = """
.jp-RenderedHTMLCommon table:has(th:nth-child(12)) { font-size: 11px; }
.jp-RenderedHTMLCommon table:has(th:nth-child(12)) th { overflow-wrap: anywhere; }
.jp-RenderedHTMLCommon table:has(th:nth-child(12)) :is(th, td) { padding: 2px 4px; }
"""


def for_screen(body: str) -> str:
    """The HTML report: wide tables in smaller type (SCREEN_CSS), and "mean ± CI" on one line
    in table cells (a narrow column otherwise breaks it into "91.45", "±", "9.43")."""
    body = body.replace("</head>", f'<style type="text/css">{SCREEN_CSS}</style>\n</head>', 1)
    return re.sub(r"(<td[^>]*>)([^<]*)(</td>)",
                  lambda m: m[1] + m[2].replace(" ± ", "\u00a0±\u00a0") + m[3], body)
