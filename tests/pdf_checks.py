"""Reading a printed report back, page by page (poppler-utils: pdftotext, pdftoppm, pdfimages,
pdftohtml, pdfinfo), for the PDF route's promises: wide tables whole, type no smaller than 8 pt,
figures not split, headings with what follows, no blank page."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path


def pages_text(pdf: Path) -> list[str]:
    """The text of each page, laid out as printed (pdftotext -layout)."""
    out = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                         text=True, check=True).stdout
    return out.split("\f")[:-1] if out.endswith("\f") else out.split("\f")


def blank_pages(pdf: Path) -> list[int]:
    """1-based numbers of pages with nothing printed on them (every pixel near white, read
    from a 20-DPI greyscale rendering of each page)."""
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["pdftoppm", "-r", "20", "-gray", "-png", str(pdf), f"{tmp}/p"],
                       check=True)
        blank = []
        for i, page in enumerate(sorted(Path(tmp).glob("p-*.png")), start=1):
            with Image.open(page) as image:
                if image.convert("L").getextrema()[0] > 235:  # the darkest pixel: near white
                    blank.append(i)
        return blank


def split_images(pdf: Path) -> list[tuple[str, list[int]]]:
    """Images drawn on more than one page: a figure split at a page break is one image object
    that two pages draw (pdfimages -list gives the object of each drawing)."""
    out = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True,
                         check=True).stdout.splitlines()[2:]
    pages = defaultdict(set)
    for line in out:
        fields = line.split()
        if len(fields) > 11 and fields[2] == "image":
            pages[f"{fields[10]} {fields[11]}"].add(int(fields[0]))
    return [(obj, sorted(p)) for obj, p in pages.items() if len(p) > 1]


def headings_ending_a_page(pages: list[str], headings: list[str]) -> list[str]:
    """Headings printed as the last text of a page, their content on the next."""
    ending = []
    for text in pages[:-1]:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines and lines[-1] in headings:
            ending.append(lines[-1])
    return ending


def font_sizes(pdf: Path) -> list[tuple[int, int, str]]:
    """(page, size, text) of every piece of text printed, the size in whole points rounded
    down as pdftohtml -xml gives it (at zoom 1: points on the page)."""
    import re
    from html import unescape

    out = subprocess.run(["pdftohtml", "-xml", "-i", "-zoom", "1", "-stdout", str(pdf)],
                         capture_output=True, text=True, check=True).stdout
    sizes, found, page = {}, [], 0
    for line in out.splitlines():
        if line.startswith("<page "):
            page = int(re.search(r'number="(\d+)"', line)[1])
        elif (spec := re.search(r'<fontspec id="(\d+)" size="(-?\d+)"', line)):
            sizes[spec[1]] = int(spec[2])
        elif (text := re.match(r'<text [^>]*font="(\d+)"[^>]*>(.*)</text>', line)):
            found.append((page, sizes[text[1]], unescape(re.sub(r"<[^>]+>", "", text[2]))))
    return found


def page_sizes(pdf: Path) -> list[tuple[float, float]]:
    """(width, height) of each page in points (pdfinfo)."""
    import re

    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "100000", str(pdf)], capture_output=True,
                          text=True, check=True).stdout
    return [(float(w), float(h)) for w, h in
            re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts", info)]
