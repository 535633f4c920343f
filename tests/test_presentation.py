"""What a reader sees outside the notebooks: the batch's closing table, the Persian README's code
blocks, the per-client figure of a run."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the batch's closing table

def test_the_batch_table_shows_each_finished_runs_tail_accuracy_and_uplink(tmp_path, capsys):
    from fedprune_core.tools import batch
    from fedprune_core.tools.batch.grid import new_record, run_dir, write_grid
    from fedprune_core.tools.batch.summary import finish

    for stem in ("fedavg", "hybrid", "broken"):
        (tmp_path / f"{stem}.yaml").write_text("rounds: 2\n")
    grid = tmp_path / "results" / "b" / "grid.jsonl"
    units = batch.expand_grid([str(tmp_path / f"{s}.yaml") for s in ("fedavg", "hybrid",
                                                                      "broken")],
                              [0], {}, grid.parent, threads=1)
    write_grid(units, grid)
    for unit, tail, uplink in zip(units[:2], (91.234, 88.5), (16.0, 0.6421)):
        run_dir(unit).mkdir(parents=True)
        (run_dir(unit) / "summary.json").write_text(json.dumps(
            {"tail_test_accuracy": tail, "total_uplink_mb": uplink}))
    records = [new_record(grid, units[0], "finished", 12.0),
               new_record(grid, units[1], "skipped"),
               new_record(grid, units[2], "failed", 1.0, error="ConfigError: boom")]
    assert finish(grid, records, "local", 13.0) == 1
    out = capsys.readouterr().out.splitlines()
    header = out[0].split()
    assert header[:8] == ["unit", "run_name", "status", "seconds", "tail", "acc", "(%)",
                          "uplink"]
    assert "91.23" in out[1] and "16.00" in out[1]
    assert "88.50" in out[2] and "0.64" in out[2]
    tail_column = out[0].index("tail acc (%)")
    assert "ConfigError: boom" in out[3] and out[3][tail_column:].startswith(" " * 12)
    saved = json.loads((grid.parent / "batch.json").read_text())["units"]
    assert saved[0]["tail_test_accuracy"] == pytest.approx(91.234)
    assert saved[1]["total_uplink_mb"] == pytest.approx(0.6421)
    assert saved[2]["tail_test_accuracy"] is None


# ---------------------------------------------------------------- README.fa.md

class _Directions(HTMLParser):
    """For each <pre> in a page, the `dir` of the nearest element around it that sets one."""

    VOID = {"br", "img", "hr", "input", "meta", "wbr", "link"}

    def __init__(self):
        super().__init__()
        self.stack, self.pre = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self.pre.append(next((d for d in reversed(self.stack) if d), None))
        if tag not in self.VOID:
            self.stack.append(dict(attrs).get("dir"))

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()


def test_the_persian_readmes_code_blocks_read_left_to_right():
    """The whole page is right-to-left; a command inside it was printed reordered
    (`..., export FEDPRUNE_DATA_ROOT=...`). Rendered as GitHub renders Markdown (CommonMark
    with HTML blocks and tables), every code block sits in a left-to-right block."""
    from markdown_it import MarkdownIt

    text = (REPO / "README.fa.md").read_text(encoding="utf-8")
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    parser = _Directions()
    parser.feed(html)
    assert len(parser.pre) == text.count("\n```") // 2 > 10
    assert parser.pre == ["ltr"] * len(parser.pre)
    assert html.startswith('<div dir="rtl">')  # the prose stays right-to-left


# ---------------------------------------------------------------- the per-client figure

@pytest.mark.figures
def test_the_client_figure_has_a_row_per_client_and_fits_a_page(tmp_path):
    import numpy as np
    import pandas as pd
    from PIL import Image

    from fedprune_core.run.plots import client_figures

    rng = np.random.default_rng(0)
    rows = [{"round": r, "client_id": c, "status": "ok", "pruning_ratio": 0.1 + 0.03 * c,
             "uplink_bytes": 40_000 + 1_000 * c, "train_loss": float(rng.uniform(0.2, 2)),
             "compute_gflops": 1.0 + c, "uplink_mbps": 20.0 - c}
            for r in range(1, 21) for c in rng.choice(20, 10, replace=False)]
    out = client_figures(pd.DataFrame(rows), tmp_path, "Hybrid(structured 0.4 adaptive)")
    assert out == {"clients": tmp_path / "clients.png"}
    with Image.open(out["clients"]) as image:
        assert image.info["dpi"][0] == pytest.approx(300, abs=0.5)
        assert 3000 <= image.width <= 3400 and image.height <= 3000
    assert client_figures(pd.DataFrame(rows[:0]), tmp_path / "none", "") == {}


# ---------------------------------------------------------------- the accuracy at each width

def _width_rows(ratios, rounds=range(2, 21, 2)):
    """widths.csv rows: the full width (ratio 0) and each deployed width, evaluated every
    second round, narrower widths less accurate."""
    return [{"round": r, "ratio": ratio, "width": 1 - ratio, "clients": 2, "test_loss": 0.3,
             "train_flops_per_sample": int(4e6 * (1 - ratio) ** 2),
             "test_accuracy": 90 - 30 * ratio - 40 * 0.8 ** r}
            for r in rounds for ratio in ratios]


@pytest.mark.figures
def test_each_deployed_width_has_its_own_colour_marker_and_line_and_a_legend_read_in_print(
        tmp_path):
    """Eight widths were shades of one colour scale, told apart neither in print nor in grey,
    under a 7-point legend beside a figure printed at two thirds of its size."""
    import pandas as pd
    from PIL import Image

    from fedprune_core.analysis.figures import display_width
    from fedprune_core.run.plots import width_figure, width_figures

    ratios = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    widths = pd.DataFrame(_width_rows(ratios))
    fig = width_figure(widths, "Hybrid(structured 0.4 adaptive + cost_weighted 0.95)")
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["full width (server)"] + [f"ratio {r:.2f}" for r in ratios[1:]]
    handles = legend.legend_handles
    colours = [tuple(h.get_color()) if not isinstance(h.get_color(), str) else h.get_color()
               for h in handles]
    assert len(set(colours)) == len(set(h.get_marker() for h in handles)) == 9
    # widths i and i + 4 share a line style but never a colour or a marker
    assert len({(c, h.get_marker(), h.get_linestyle()) for c, h in zip(colours, handles)}) == 9
    assert len(set(h.get_linestyle() for h in handles)) == 4
    # the legend under the axes, inside the figure
    fig.canvas.draw()
    box = legend.get_window_extent()
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y0 >= fig.bbox.y0
    assert all(box.y1 <= ax.get_window_extent().y0 for ax in fig.axes)
    out = width_figures(widths, tmp_path, "Hybrid")
    with Image.open(out["width_accuracy"]) as image:
        width_in, height_in = image.width / 300, image.height / 300
    # printed (the print CSS: 190 mm wide, 105 mm tall at most; 96 CSS px an inch) at scale
    # `printed`: its legend and tick labels at 8 pt or more there
    shown = display_width(out["width_accuracy"])
    printed = min(shown, 190 / 25.4 * 96, 105 / 25.4 * 96 * width_in / height_in) / 96 / width_in
    assert width_in == pytest.approx(7.0) and printed >= 0.95
    assert min(t.get_fontsize() for t in legend.get_texts()) * printed >= 8
    for ax in fig.axes:
        assert min(t.get_fontsize() for t in ax.get_xticklabels() + ax.get_yticklabels()) \
            * printed >= 8
    assert width_figures(pd.DataFrame(_width_rows([0.0])), tmp_path / "one", "") == {}
