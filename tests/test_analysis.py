"""Tests of fedprune_core.analysis on fake run folders whose statistics are worked out by hand."""

import json
import math
import re
import warnings
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fedprune_core import analysis
from fake_runs import ACCURACY, BATCH_METHODS, make_fake_batch, make_fake_results, write_run

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"
HYBRID = "Hybrid(structured+topk 0.9)"
T_975_1 = 12.706204736174707  # Student-t 97.5% quantile, 1 degree of freedom
T_975_2 = 4.302652729749464  # 2 degrees of freedom


@pytest.fixture
def results(tmp_path):
    return make_fake_results(tmp_path / "results")


@pytest.fixture
def runs(results):
    return analysis.load_runs(results)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    results = make_fake_results(tmp_path_factory.mktemp("analyze") / "results")
    return analysis.analyze(results, target_accuracy=90.0)


# ---------------------------------------------------------------- loading

def test_load_runs_reads_only_finished_run_folders(runs):
    assert list(runs.summaries["run_name"]) == ["fedavg_s0", "fedavg_s1", "hybrid_s0", "hybrid_s1"]
    assert list(runs.summaries["label"]) == ["FedAvg", "FedAvg", HYBRID, HYBRID]
    assert list(runs.summaries["seed"]) == [0, 1, 0, 1]
    assert set(runs.summaries["dataset"]) == {"mnist"}  # config fields are joined in
    assert "_meta" not in runs.summaries and "artifacts" not in runs.summaries
    assert len(runs.metrics) == 4 * 5 and len(runs.clients) == 4 * 5 * 2
    assert len(runs.partitions) == 4 * 4
    last = runs.metrics[(runs.metrics["run_name"] == "hybrid_s1") & (runs.metrics["round"] == 5)]
    assert last["cumulative_uplink_mb"].item() == pytest.approx(0.4)  # 5 rounds x 2 x 40 kB
    assert last["cumulative_client_train_gflops"].item() == pytest.approx(3.0)


def test_unfinished_run_is_skipped_with_a_warning(results):
    write_run(results, HYBRID, 2, [10.0, 20.0], finished=False)
    with pytest.warns(UserWarning, match="hybrid_s2"):
        runs = analysis.load_runs(results)
    assert "hybrid_s2" not in set(runs.summaries["run_name"])
    assert "hybrid_s2" not in set(runs.metrics["run_name"])


def test_no_finished_run_is_an_error_naming_the_folder(tmp_path):
    write_run(tmp_path, "FedAvg", 0, [50.0], finished=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path.resolve()))):
            analysis.load_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        analysis.load_runs(tmp_path / "missing")


def test_pooling_runs_with_different_configs_warns(results):
    config_path = results / "fedavg_s1" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "dataset": "cifar10"}))
    with pytest.warns(UserWarning, match="'FedAvg' differ in dataset"):
        runs = analysis.load_runs(results)
    labels = dict(zip(runs.summaries.run_name, runs.summaries.label))
    assert labels["fedavg_s1"] == "FedAvg [dataset=cifar10]"  # kept apart, not pooled as seeds
    assert labels["fedavg_s0"] == "FedAvg [dataset=mnist]"
    assert set(runs.metrics.label) >= {"FedAvg [dataset=cifar10]", "FedAvg [dataset=mnist]"}


def test_two_experiments_with_one_label_are_two_rows(tmp_path):
    """The tester's two smoke runs: one label, seed 0 both, other clients, epochs and data.
    They were pooled as "Seeds 2 | 14.68 ± 56.67"; they are two experiments."""
    write_run(tmp_path, "FedAvg", 0, [40.0, 50.0], name="smoke_a",
              config={"num_clients": 4, "local_epochs": 1, "data_fraction": 0.1})
    write_run(tmp_path, "FedAvg", 0, [5.0, 10.0], name="smoke_b",
              config={"num_clients": 10, "local_epochs": 2, "data_fraction": 0.2})
    with pytest.warns(UserWarning, match="'FedAvg' differ in num_clients, local_epochs, "
                                         "data_fraction"):
        runs = analysis.load_runs(tmp_path)
    table = analysis.method_table(runs, 90.0).set_index("Method")
    assert list(table.index) == ["FedAvg [num_clients=4, local_epochs=1, data_fraction=0.1]",
                                 "FedAvg [num_clients=10, local_epochs=2, data_fraction=0.2]"]
    assert list(table["Seeds"]) == [1, 1]
    assert list(table["Final acc. (%)"]) == ["50.00", "10.00"]  # no interval from one run


def test_runs_repeating_a_seed_are_rows_of_their_own(tmp_path):
    """A make run, an ablation and an explorer click, all seed 0, one label and the same
    parameters: repeats, not three seeds."""
    for name, accuracy in (("run_a", 30.0), ("run_b", 10.0), ("run_c", 0.0)):
        write_run(tmp_path, "FedAvg", 0, [accuracy], name=name)
    write_run(tmp_path, "FedAvg", 1, [20.0], name="run_d")
    with pytest.warns(UserWarning, match="'FedAvg' repeat seed"):
        runs = analysis.load_runs(tmp_path)
    table = analysis.method_table(runs, 90.0).set_index("Method")
    assert list(table.index) == ["FedAvg", "FedAvg [run run_b]", "FedAvg [run run_c]"]
    assert list(table["Seeds"]) == [2, 1, 1]  # run_a and run_d: seeds 0 and 1
    assert table.loc["FedAvg", "Final acc. (%)"].startswith("25.00 ± ")


def test_a_corrupt_summary_is_skipped_with_a_note_naming_the_run(results, tmp_path):
    (results / "fedavg_s1" / "summary.json").write_text('{"run_name": ')
    (results / "hybrid_s1" / "config.json").write_bytes(b"\xff\xfe")
    with pytest.warns(UserWarning) as caught:
        runs = analysis.load_runs(results)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert re.search("fedavg_s1 .*summary.json is not valid JSON", messages[0])
    assert re.search("hybrid_s1 .*config.json is not valid JSON", messages[1])
    assert set(runs.summaries["run_name"]) == {"fedavg_s0", "hybrid_s0"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # analyze() turns them into notes, not warnings
        outputs = analysis.analyze(results, out_dir=tmp_path / "out")
    assert any("fedavg_s1" in n for n in outputs["notes"])
    assert any("hybrid_s1" in n and "config.json" in n for n in outputs["notes"])
    assert "fedavg_s1" in (tmp_path / "out" / "notes.md").read_text()


# ---------------------------------------------------------------- statistics and tables

def test_mean_ci_is_the_student_t_interval():
    mean, half, n = analysis.mean_ci([92.0, 94.0])  # sd sqrt(2), standard error 1
    assert (mean, n) == (93.0, 2) and half == pytest.approx(T_975_1)
    mean, half, n = analysis.mean_ci([1.0, 2.0, float("nan"), 3.0])  # NaN ignored; sd 1
    assert (mean, n) == (2.0, 3) and half == pytest.approx(T_975_2 / math.sqrt(3))
    mean, half, n = analysis.mean_ci([91.5])
    assert (mean, n) == (91.5, 1) and math.isnan(half)
    assert analysis.mean_ci([])[2] == 0


def test_rounds_to_target_is_the_first_round_at_or_above_it(runs):
    rounds = analysis.rounds_to_target(runs.metrics, 90.0)
    assert rounds["fedavg_s0"] == 4 and rounds["fedavg_s1"] == 5
    assert math.isnan(rounds["hybrid_s0"])  # never reaches 90
    assert rounds["hybrid_s1"] == 5  # exactly 90.0 counts
    # Round 2 is not evaluated (NaN), so a low target is first met in round 1.
    assert analysis.rounds_to_target(runs.metrics, 40.0).tolist() == [1, 1, 1, 1]
    assert analysis.rounds_to_target(runs.metrics, 60.0)["hybrid_s0"] == 3


def test_method_table_matches_hand_computed_values(runs):
    table = analysis.method_table(runs, target_accuracy=90.0).set_index("Method")
    assert list(table.index) == ["FedAvg", HYBRID]
    fedavg, hybrid = table.loc["FedAvg"], table.loc[HYBRID]
    assert fedavg["Seeds"] == 2
    # FedAvg finals 92, 94: mean 93, half-width t * sqrt(2) / sqrt(2).
    assert fedavg["Final acc. (%)"] == f"93.00 ± {T_975_1:.2f}" == "93.00 ± 12.71"
    # Hybrid finals 85, 90: standard error 2.5.
    assert hybrid["Best acc., test-selected (%)"] == f"87.50 ± {T_975_1 * 2.5:.2f}"
    assert fedavg["Rounds to 90%"] == f"4.5 ± {T_975_1 * 0.5:.1f} (2/2)"  # rounds 4 and 5
    assert hybrid["Rounds to 90%"] == "5 (1/2)"  # the seed that never got there is counted
    # the headline: mean of the evaluated rounds (all 4 of them, tail_rounds 5): 79.5 and 81.875
    assert fedavg["Tail acc. (%)"] == f"80.69 ± {T_975_1 * 1.1875:.2f}"
    assert list(table.columns[:3]) == ["Seeds", "Tail acc. (%)", "Final acc. (%)"]
    assert (fedavg["Uplink (MB)"], hybrid["Uplink (MB)"]) == ("4.00", "0.40")
    assert (fedavg["Compression (×)"], hybrid["Compression (×)"]) == ("1.0", "10.0")
    assert (fedavg["FLOP saving (%)"], hybrid["FLOP saving (%)"]) == ("0.0", "40.0")
    assert (fedavg["Wall time (s)"], hybrid["Wall time (s)"]) == ("11.0", "6.5")
    # every tail averages all 4 evaluated rounds (a warm-up tail), and 2 seeds is fewer than 3
    assert list(table["Tail includes warm-up"]) == [True, True]
    assert list(table["Fewer than 3 seeds"]) == [True, True]


def test_one_seed_shows_the_mean_without_an_interval(tmp_path):
    for label in ("FedAvg", HYBRID):
        write_run(tmp_path, label, 0, ACCURACY[(label, 0)])
    runs = analysis.load_runs(tmp_path)
    table = analysis.method_table(runs, 90.0).set_index("Method")
    assert table.loc["FedAvg", "Seeds"] == 1
    assert table.loc["FedAvg", "Final acc. (%)"] == "92.00"
    assert table.loc["FedAvg", "Rounds to 90%"] == "4 (1/1)"
    assert table.loc[HYBRID, "Rounds to 90%"] == "not reached (0/1)"
    stats = analysis.label_stats(runs, 90.0).set_index(["label", "metric"])
    assert stats.loc[("FedAvg", "final_test_accuracy"), "n"] == 1
    assert math.isnan(stats.loc[("FedAvg", "final_test_accuracy"), "ci95"])


def test_accuracy_curves_pool_seeds_per_round(runs):
    curves = analysis.accuracy_curves(runs.metrics, "cumulative_uplink_mb")
    fedavg = curves[curves["label"] == "FedAvg"].set_index("round")
    assert 2 not in fedavg.index  # not evaluated
    assert fedavg.loc[3, "mean"] == pytest.approx(87.0) and fedavg.loc[3, "n"] == 2
    assert fedavg.loc[3, "x"] == pytest.approx(2.4)  # 3 rounds x 0.8 MB


def test_write_table_writes_csv_markdown_and_booktabs_latex(runs, tmp_path):
    paths = analysis.write_table(analysis.method_table(runs, 90.0), tmp_path, "methods")
    assert set(paths) == {"csv", "md", "tex"} and all(p.exists() for p in paths.values())
    header = paths["md"].read_text().splitlines()[0]
    assert header.startswith("| Method") and "Final acc. (%)" in header
    assert " 93.00 ± 12.71 |" in paths["md"].read_text()
    tex = paths["tex"].read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in tex
    assert r"93.00 $\pm$ 12.71" in tex and r"Final acc. (\%)" in tex
    assert "±" not in tex
    assert paths["csv"].read_text().splitlines()[0].startswith("Method,Seeds,")


# ---------------------------------------------------------------- figures and analyze()

def _png_dpi(path: Path) -> float:
    from PIL import Image
    with Image.open(path) as image:
        return image.info["dpi"][0]


FIGURES = ("tail_vs_uplink", "tail_vs_flops", "accuracy_vs_round", "accuracy_vs_uplink",
           "accuracy_vs_flops", "client_pruning_ratios", "partition")
TABLES = ("methods", "methods_stats", "runs", "paired", "cost_to_accuracy", "accuracy_at_budget",
          "legend")


def test_analyze_writes_every_table_and_figure(outputs):
    out_dir = outputs["out_dir"]
    assert out_dir.name == "analysis"
    assert set(outputs["figures"]) == set(FIGURES) and set(outputs["tables"]) == set(TABLES)
    for name in FIGURES:
        png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
        assert outputs["figures"][name] == {"png": png, "pdf": pdf}
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert _png_dpi(png) == pytest.approx(300, abs=0.5)
        assert pdf.read_bytes()[:5] == b"%PDF-"
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (out_dir / f"{name}.{ext}").stat().st_size > 0


def test_analyze_again_ignores_its_own_output_folder(outputs):
    again = analysis.analyze(outputs["out_dir"].parent)
    runs = (again["out_dir"] / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 4


def test_pruning_figure_without_pruning_runs_is_a_note(tmp_path):
    make_fake_results(tmp_path, labels=("FedAvg",))
    runs = analysis.load_runs(tmp_path)
    paths = analysis.plot_client_pruning(runs, tmp_path / "out")
    assert paths["png"].exists() and paths["pdf"].exists()


# ---------------------------------------------------------------- the notebook

def test_notebook_is_thin_clean_and_parameterized():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata.kernelspec.name == "fedprune-sparse"  # the project's .venv kernel
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    import papermill
    params = papermill.inspect_notebook(str(NOTEBOOK))
    assert {name: p["default"] for name, p in params.items()} == {
        "results_dir": '"results"', "batch": "None", "baseline": '"FedAvg"', "bands": '"auto"',
        "target_accuracy": "90.0", "out_dir": "None"}


@pytest.fixture(scope="module")
def analysed_notebook(tmp_path_factory):
    """The analysis notebook run as `make analysis` runs it (papermill, quiet) on one batch of
    a results folder that also holds a stray run, then exported to PDF: (results, executed
    notebook, its PDF or None). The command prints one line, what it wrote: no kernel warning,
    no banner."""
    import subprocess
    import sys

    from fedprune_core.tools.reports import export_pdf, find_chromium

    results = tmp_path_factory.mktemp("notebook") / "results"
    make_fake_results(results / "ablations")
    write_run(results, "FedAvg", 0, [10.0, 20.0, 30.0], name="smoke_test")  # not in the batch
    out = results / "ablations" / "analysis" / "analysis.ipynb"
    out.parent.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "fedprune_core.tools.notebook", str(NOTEBOOK),
                           str(out), "-p", "results_dir", str(results), "-p", "batch",
                           "ablations", "-p", "bands", "ci95"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    # one line: what it wrote and where, nothing of the kernel or papermill
    assert done.stdout.splitlines() == [
        f"wrote {out} and, in {out.parent}/, {len(list(out.parent.glob('*.csv')))} tables (.csv "
        f".md .tex) and {len(list(out.parent.glob('*.png')))} figures (.png .pdf)"]
    return results, out, export_pdf(out) if find_chromium() else None


def test_notebook_runs_under_papermill_on_one_batch(analysed_notebook):
    results, notebook, _ = analysed_notebook
    out_dir = results / "ablations" / "analysis"
    methods = (out_dir / "methods.md").read_text()
    assert "93.00 ± 12.71" in methods  # the stray run did not join FedAvg's seeds
    assert (out_dir / "methods.tex").exists() and (out_dir / "tail_vs_uplink.png").exists()
    runs = (out_dir / "runs.csv").read_text()
    assert "smoke_test" not in runs and len(runs.splitlines()) == 1 + 4
    assert not (results / "analysis").exists()
    nb = nbformat.read(notebook, as_version=4)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == len(FIGURES)
    assert all(o.metadata["image/png"].get("alt") for o in images)  # alternative text


def test_the_analysis_pdf_keeps_every_column_and_leaves_no_page_blank(analysed_notebook):
    """The runs table's last column was cut, a page was blank, a heading ended a page."""
    from pdf_checks import blank_pages, headings_ending_a_page, pages_text, split_images

    _, notebook, pdf = analysed_notebook
    if pdf is None:
        pytest.skip("needs headless Chromium (make pdf-deps)")
    pages = pages_text(pdf)
    text = "\n".join(pages)
    runs = pd.read_csv(pdf.parent / "runs.csv")
    for tail, simulated in zip(runs.tail_test_accuracy, runs.simulated_time_sec):
        # a run's row (found by its tail accuracy) ends with its last column
        line = next(line for line in text.splitlines() if f" {tail:.2f} " in line)
        assert line.rstrip().endswith(f" {simulated:,.0f}"), line
    assert blank_pages(pdf) == []
    assert split_images(pdf) == []
    headings = [line.lstrip("# ").strip() for c in nbformat.read(notebook, 4).cells
                if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("#")]
    assert headings_ending_a_page(pages, headings) == []
    assert len(pages) <= 9, len(pages)


def test_the_analysis_pdf_prints_its_tables_in_8_point_type_and_their_marks(analysed_notebook):
    """On A4 the methods and runs tables shrank to 5 pt and their headers broke mid-word
    ("Se/ed/s", "Compr/ession"); the tables were not flagged. Read back from the PDF: no text
    under 8 pt, the two wide tables on landscape pages, header words whole, each method's row
    with its short label and marks, the footnotes and the paired reading under their tables."""
    from fedprune_core.analysis.tables import FOOTNOTES
    from pdf_checks import font_sizes, page_sizes, pages_text

    _, _, pdf = analysed_notebook
    if pdf is None:
        pytest.skip("needs headless Chromium (make pdf-deps)")
    assert min(size for _, size, _ in font_sizes(pdf)) >= 8
    pages, sizes = pages_text(pdf), page_sizes(pdf)
    landscape = [i for i, (width, height) in enumerate(sizes) if width > height]
    assert landscape == [i for i, text in enumerate(pages)
                         if "Experiments compared" in text or "Every finished run" in text]
    methods = pages[landscape[0]]
    words = {w for line in methods.splitlines() for w in line.split()}
    out_dir = pdf.parent
    header, _, _ = _md_table(out_dir / "methods.md")
    for word in (w for name in header for w in re.split(r"(?<=-)|\s+", name) if w):
        assert word in words, word  # "Seeds", "Compression", ... each printed whole
    assert re.search(r"^FedAvg\s+2 ‡ 80\.69 ± 15\.09 † 93\.00 ± 12\.71\s+93\.00 ± 12\.71\s+"
                     r"4\.5 ± 6\.4 \(2/2\)\s+4\.00\s+1\.0\s+1\.0\s+0\.00\s+0\.50\s+0\.0\s+11\.0$",
                     methods, re.M), methods
    assert re.search(r"^Hybrid\(struct\+topk(\s+0\.9\))?\s+2 ‡ 71\.62 ± 36\.53 †", methods,
                     re.M)
    flat = " ".join(" ".join(pages).split())
    assert flat.count(FOOTNOTES["†"]) == 3  # under the methods, paired and runs tables
    assert flat.count(FOOTNOTES["‡"]) == 2  # the runs table has no seeds column
    runs = analysis.load_runs(pdf.parents[1])
    reading = analysis.paired_reading(analysis.paired_table(runs, "FedAvg"),
                                      analysis.label_aliases(runs.summaries))
    assert reading.startswith("Over the seeds each method shares with FedAvg, the paired 95% "
                              "interval is narrower than the unpaired one for 1 of 1 methods")
    assert reading in flat and "far narrower" not in flat


# ---------------------------------------------------------------- run folders not to be believed

def test_a_config_edited_after_the_run_is_skipped(results):
    """summary.json records config.json's sha256: a run whose config.json was edited since is
    skipped with a note saying why; runs from before the field (the others) are read as ever."""
    import hashlib

    run = results / "hybrid_s1"
    summary = json.loads((run / "summary.json").read_text())
    digest = hashlib.sha256((run / "config.json").read_bytes()).hexdigest()
    (run / "summary.json").write_text(json.dumps({**summary, "config_sha256": digest}))
    assert "hybrid_s1" in set(analysis.load_runs(results).summaries["run_name"])  # unchanged
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "pruning_ratio": 0.9}))
    with pytest.warns(UserWarning, match="Skipping run hybrid_s1 .*config.json was changed "
                                         "after the run"):
        runs = analysis.load_runs(results)
    assert set(runs.summaries["run_name"]) == {"fedavg_s0", "fedavg_s1", "hybrid_s0"}
    assert "config_sha256" not in runs.summaries


def test_a_summary_with_wrong_types_is_skipped(results):
    path = results / "fedavg_s1" / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "tail_test_accuracy": "high"}))
    path = results / "hybrid_s1" / "metrics.csv"
    path.write_text(path.read_text().replace("\n5,", "\nfive,"))
    with pytest.warns(UserWarning) as caught:
        runs = analysis.load_runs(results)
    messages = sorted(str(w.message) for w in caught)
    assert "fedavg_s1" in messages[0] and "tail_test_accuracy is 'high'" in messages[0]
    assert "hybrid_s1" in messages[1] and "round column is not numeric" in messages[1]
    assert set(runs.summaries["run_name"]) == {"fedavg_s0", "hybrid_s0"}


def test_a_folder_name_that_is_not_utf8_is_skipped(results, tmp_path):
    import os

    write_run(results, "FedAvg", 2, [60.0], name=os.fsdecode(b"fedavg_\xff"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # analyze() turns them into notes
        outputs = analysis.analyze(results, out_dir=tmp_path / "out")
    assert any("fedavg_\\xff" in note and "not UTF-8" in note for note in outputs["notes"])
    assert len((tmp_path / "out" / "runs.csv").read_text().splitlines()) == 1 + 4


def test_a_label_made_for_an_experiment_never_takes_a_users_label(tmp_path):
    """Runs labelled FedAvg with rounds 2 and 3 become "FedAvg [rounds=2]" and "FedAvg
    [rounds=3]"; a user's own label "FedAvg [rounds=2]" (another experiment) keeps its name and
    the made one gets a number, instead of the two being pooled as seeds of one row."""
    write_run(tmp_path, "FedAvg", 0, [10.0, 20.0], name="a")
    write_run(tmp_path, "FedAvg", 0, [30.0, 40.0, 50.0], name="b")
    write_run(tmp_path, "FedAvg", 1, [60.0, 70.0], name="mine",
              config={"label": "FedAvg [rounds=2]", "local_epochs": 5})
    path = tmp_path / "mine" / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "label": "FedAvg [rounds=2]"}))
    with pytest.warns(UserWarning) as caught:
        runs = analysis.load_runs(tmp_path)
    assert any("'FedAvg [rounds=2]' is already the label of other runs" in str(w.message)
               for w in caught)
    labels = dict(zip(runs.summaries.run_name, runs.summaries.label))
    assert labels == {"a": "FedAvg [rounds=2] #2", "b": "FedAvg [rounds=3]",
                      "mine": "FedAvg [rounds=2]"}
    table = analysis.method_table(runs, 90.0).set_index("Method")
    assert list(table["Seeds"]) == [1, 1, 1]


def test_analysis_into_a_folder_it_cannot_write_is_a_clear_error(results, tmp_path):
    from fedprune_core.config import ConfigError

    (tmp_path / "file").write_text("keep me")
    with pytest.raises(ConfigError, match="out_dir: .* is not a writable folder"):
        analysis.analyze(results, out_dir=tmp_path / "file" / "analysis")


# ---------------------------------------------------------------- one batch, many methods

@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Twelve methods x 2 seeds in results/ablations, beside runs that are not the batch's (a
    3-round smoke run, another batch): analysed as the batch, and as every run."""
    results = tmp_path_factory.mktemp("batch") / "results"
    make_fake_batch(results, "ablations")
    make_fake_batch(results, "other", seeds=(0,), rounds=4,
                    methods={"FedAvg": (1.0, 1.0)})
    write_run(results, "FedAvg", 0, [50.0, 60.0, 70.0], name="smoke_test",
              config={"rounds": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = analysis.load_runs(results / "ablations")
    return results, runs, analysis.analyze(results, batch="ablations")


def test_analysis_of_a_batch_sees_only_its_runs(batch):
    results, _, outputs = batch
    assert outputs["out_dir"] == results / "ablations" / "analysis"
    # no stray run split FedAvg into experiments; 20 rounds, a tail of 5: no warm-up; 2 seeds
    assert outputs["notes"] == [
        'Fewer than 3 seeds (marked ‡ in the tables): every experiment (12) has 2 seeds. A 95% '
        'interval over 2 seeds is ±12.71 standard errors and over 1 there is none: run 3 seeds '
        'or more (SEEDS="0 1 2") before comparing methods.']
    runs = (outputs["out_dir"] / "runs.csv").read_text().splitlines()[1:]
    assert len(runs) == 12 * 2 and all(row.startswith("m") for row in runs)
    methods = (outputs["out_dir"] / "methods.csv").read_text()
    assert "FedAvg [" not in methods and "smoke_test" not in methods
    with pytest.raises(FileNotFoundError, match="batch: .*nope.* batches in .*ablations"):
        analysis.analyze(results, batch="nope")


def test_every_method_has_its_own_colour_and_marker_in_every_figure():
    labels = list(BATCH_METHODS) + [f"method {i}" for i in range(48)]
    styles = analysis.method_styles(labels)
    pairs = {(s.color, s.marker) for s in styles.values()}
    assert len(pairs) == len(labels) == 60
    assert styles["FedAvg"] == analysis.method_styles(["FedAvg"])["FedAvg"]  # baseline first
    assert analysis.method_styles(reversed(labels)) == styles  # not the order runs were found
    twelve = analysis.method_styles(list(BATCH_METHODS))
    assert len({s.color for s in twelve.values()}) == 10  # colours repeat only with new markers
    assert len({(s.color, s.marker) for s in twelve.values()}) == 12
    # a method sharing a colour gets a shape far from the first one's: the 11th and 12th
    # (blue and orange again) were a hexagon beside FedAvg's circle, a pentagon beside a square
    look_alike = {frozenset("oh"), frozenset("op"), frozenset("sp"), frozenset("sD"),
                  frozenset("sh")}
    by_color = {}
    for s in twelve.values():
        by_color.setdefault(s.color, []).append(s.marker)
    assert all(frozenset(m) not in look_alike for m in by_color.values() if len(m) == 2)


def test_legends_use_short_labels_and_tables_the_full_ones(batch):
    _, runs, outputs = batch
    long = ("Hybrid(structured 0.4 adaptive + cost_weighted 0.95) [rounds=20, num_clients=20, "
            "local_epochs=1, data_fraction=0.2, test_samples=2000, eval_every=2]")
    short = analysis.short_label(long)
    assert short.startswith("Hybrid(struct 0.4 adapt + cw 0.95)")
    assert "[R20 N20 E1 data0.2" in short.replace("\n", " ")
    assert all(len(line) <= 42 for line in short.split("\n")) and short.count("\n") <= 1
    assert analysis.short_label("FedAvg [run ablations/fedavg_s3]") == "FedAvg [run fedavg_s3]"
    mine = "My label for chapter three, structured, adaptive"
    assert analysis.short_label(mine, given=True).replace("\n", " ") == mine
    aliases = analysis.label_aliases(runs.summaries)
    assert len(set(aliases.values())) == len(aliases) == 12
    legend = (outputs["out_dir"] / "legend.csv").read_text()
    assert "Hybrid(struct 0.4 adapt + cw 0.95 no-EF)" in legend
    assert "Hybrid(structured 0.4 adaptive + cost_weighted 0.95 no-EF)" in legend
    assert "Hybrid(structured 0.4 adaptive + cost_weighted 0.95 no-EF)" in \
        (outputs["out_dir"] / "methods.csv").read_text()
    # the printed tables name each method by its short label, the legend key by both
    for name in ("methods", "runs", "paired"):
        _, rows, _ = _md_table(outputs["out_dir"] / f"{name}.md")
        column = 1 if name == "runs" else 0
        assert {row[column] for row in rows} <= {a.replace("\n", " ") for a in aliases.values()}
    legend = dict((row[0], row[2]) for row in _md_table(outputs["out_dir"] / "legend.md")[1])
    assert legend["Hybrid(struct 0.4 adapt + cw 0.95 no-EF)"] == \
        "Hybrid(structured 0.4 adaptive + cost_weighted 0.95 no-EF)"


def test_bands_read_at_the_seeds_there_are(batch, results):
    from fedprune_core.config import ConfigError

    _, runs, outputs = batch
    assert outputs["bands"] == "std"  # 2 seeds: a 95% t band would be +-12.7 SD
    assert analysis.resolve_bands("auto", analysis.load_runs(results)) == "std"
    assert analysis.resolve_bands("ci95", runs) == "ci95"
    write_run(results / "single", "FedAvg", 0, [50.0])
    assert analysis.resolve_bands("auto", analysis.load_runs(results / "single")) == "none"
    with pytest.raises(ConfigError, match="bands: 'wide' is not allowed"):
        analysis.resolve_bands("wide", runs)


def _legend_inside(fig) -> list[str]:
    """The figure's legend texts, after checking the legend lies inside the canvas."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box, canvas = legend.get_window_extent(renderer), fig.bbox
    assert canvas.x0 - 1 <= box.x0 and box.x1 <= canvas.x1 + 1, (box, canvas)
    assert canvas.y0 - 1 <= box.y0 and box.y1 <= canvas.y1 + 1, (box, canvas)
    for ax in fig.axes:  # the legend is below the axes, not over them
        if ax.get_visible():
            assert box.y1 <= ax.get_window_extent(renderer).y0 + 1
    return [t.get_text() for t in legend.get_texts()]


def test_figure_legends_name_every_line_and_stay_inside_the_canvas(batch):
    _, runs, _ = batch
    aliases = analysis.label_aliases(runs.summaries)
    fig = analysis.accuracy_figure(runs, "round", "Round", target_accuracy=90.0)
    texts = _legend_inside(fig)
    assert set(aliases.values()) <= set(texts)
    assert "target 90%" in texts and "band: ±1 SD over seeds" in texts
    assert all(any(list(line.get_ydata()) == [90.0, 90.0] for line in ax.get_lines())
               for ax in fig.axes if ax.get_visible())  # near the curves: drawn
    fig = analysis.tail_figure(runs, "total_uplink_mb", "Total uplink per run", "MB")
    assert set(aliases.values()) == set(_legend_inside(fig))


def test_saved_figures_are_300_dpi_and_never_wider_than_a_page_allows(batch):
    from PIL import Image

    _, _, outputs = batch
    for name, paths in outputs["figures"].items():
        with Image.open(paths["png"]) as image:
            width, height = image.size
            assert image.info["dpi"][0] == pytest.approx(300, abs=0.5), name
        assert 1500 <= width <= analysis.figures.MAX_WIDTH * 300 < 4000, (name, width)
        assert height <= 4000, (name, height)
        assert analysis.display_width(paths["png"]) == min(980, round(width / 3)), name


def test_runs_of_different_lengths_get_a_panel_each(batch):
    results, _, _ = batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = analysis.load_runs(results)
    fig = analysis.accuracy_figure(runs, "round", "Round")
    panels = {ax.get_title(): ax.get_xlim() for ax in fig.axes if ax.get_visible()}
    assert panels == {"3-round runs": (0.5, 3.5), "4-round runs": (0.5, 4.5),
                      "20-round runs": (0.5, 20.5)}


# ---------------------------------------------------------------- what a table cannot be read for

SHORT_METHODS = {k: BATCH_METHODS[k] for k in
                 ("FedAvg", "Sparsify(topk 0.9)",
                  "Hybrid(structured 0.4 adaptive + cost_weighted 0.95)")}
SHORT_LABELS = ["FedAvg", "Sparsify(topk 0.9)", "Hybrid(struct 0.4 adapt + cw 0.95)"]
WARMUP_NOTE = ("Tail includes warm-up rounds (marked † in the tables): 6 of 6 runs, in every "
               "experiment (3), average all 3 of their evaluated rounds (tail_rounds = 5). A tail "
               "is marked when it averages more than half of the run's evaluated rounds: it is not "
               "a plateau, so compare these runs only with runs of the same length, or run more "
               "rounds.")
SEEDS_NOTE = ('Fewer than 3 seeds (marked ‡ in the tables): every experiment (3) has 2 seeds. A '
              '95% interval over 2 seeds is ±12.71 standard errors and over 1 there is none: run '
              '3 seeds or more (SEEDS="0 1 2") before comparing methods.')


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """`make ablations ROUNDS=3` at 2 seeds: each tail (tail_rounds 5) averages rounds 1-3.
    (results/short, its runs, its analysis)."""
    results = tmp_path_factory.mktemp("short") / "results"
    make_fake_batch(results, "short", seeds=(0, 1), rounds=3, methods=SHORT_METHODS)
    return results, analysis.load_runs(results / "short"), analysis.analyze(results,
                                                                            batch="short")


def _md_table(path: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """A Markdown table read back: its header cells, its rows' cells (escapes undone), and the
    other non-empty lines (the footnotes under it)."""
    lines = path.read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]

    def cells(line: str) -> list[str]:
        return [re.sub(r"\\(.)", r"\1", c.strip()) for c in line.strip("|").split(" | ")]
    return (cells(table[0]), [cells(line) for line in table[2:]],
            [line for line in lines if line and not line.startswith("|")])


def test_the_warmup_rule_is_a_tail_longer_than_half_the_evaluated_rounds():
    assert analysis.tail_includes_warmup(3, 3)  # a 3-round run: rounds 1-3, round 1 included
    assert analysis.tail_includes_warmup(5, 9)  # rounds 5-9 of 9: reaches into the first half
    assert not analysis.tail_includes_warmup(5, 10)  # rounds 6-10 of 10
    assert not analysis.tail_includes_warmup(5, 200)
    assert not analysis.tail_includes_warmup(None, 3)  # a summary without tail_rounds


def test_a_short_run_and_two_seeds_are_said_in_the_notes(short):
    """ROUNDS=3: the notes said every run was read, none set apart; now two lines say what the
    tables mark, in notes.md too."""
    _, runs, outputs = short
    assert list(runs.summaries["evaluated_rounds"]) == [3] * 6
    assert outputs["notes"] == [WARMUP_NOTE, SEEDS_NOTE]
    assert (outputs["out_dir"] / "notes.md").read_text() == f"- {WARMUP_NOTE}\n- {SEEDS_NOTE}\n"


def test_the_marks_and_their_footnotes_are_in_the_printed_tables(short):
    from fedprune_core.analysis.tables import FOOTNOTES, markdown_escape

    _, _, outputs = short
    out = outputs["out_dir"]
    header, rows, rest = _md_table(out / "methods.md")
    assert header[:3] == ["Method", "Seeds", "Tail acc. (%)"]
    assert [row[0] for row in rows] == SHORT_LABELS  # short labels in the printed table
    assert [row[1] for row in rows] == ["2 ‡"] * 3
    assert [row[2] for row in rows] == ["35.31 ± 3.62 †", "34.36 ± 3.62 †",
                                        "33.41 ± 3.66 †"]
    assert [row[3] for row in rows] == ["49.94 ± 5.02", "48.61 ± 5.02", "47.30 ± 5.08"]
    assert rest == [markdown_escape(FOOTNOTES["†"]), markdown_escape(FOOTNOTES["‡"])]
    assert rest[0].startswith("† Tail includes warm-up rounds: it averages more than half of "
                              "the run's evaluated rounds")
    tex = (out / "methods.tex").read_text().splitlines()
    assert tex[4] == (r"FedAvg & 2$^{\ddagger}$ & 35.31 $\pm$ 3.62$^{\dagger}$ & 49.94 $\pm$ "
                      r"5.02 & 49.94 $\pm$ 5.02 & not reached (0/2) & 2.40 & 1.0 & 1.0 & 0.00 "
                      r"& 0.50 & 0.0 & 9.0 \\")
    assert tex[tex.index(r"\end{tabular}") + 1:] == [
        r"\par\smallskip{\footnotesize",
        r"$^{\dagger}$ Tail includes warm-up rounds: it averages more than half of the run's "
        r"evaluated rounds (every one, round 1 included, when the run evaluated no more than "
        r"tail\_rounds), so it is not a plateau; compare it only with runs of the same "
        r"length.\par",
        r"$^{\ddagger}$ Fewer than 3 seeds: a 95\% interval over 2 seeds is $\pm$12.71 "
        r"standard errors, over 1 there is none; too few to tell methods apart.\par", "}"]
    csv = pd.read_csv(out / "methods.csv")  # the full labels and the flags as columns
    assert list(csv["Method"]) == list(SHORT_METHODS)
    assert csv["Tail includes warm-up"].all() and csv["Fewer than 3 seeds"].all()
    assert not csv["Tail acc. (%)"].str.contains("†").any()
    _, rows, rest = _md_table(out / "paired.md")  # the difference and the shared seeds
    assert [(row[0], row[1], row[3]) for row in rows] == [
        ("Sparsify(topk 0.9)", "-0.95 ± 0.00 †", "2 ‡"),
        ("Hybrid(struct 0.4 adapt + cw 0.95)", "-1.90 ± 0.04 †", "2 ‡")]
    assert len(rest) == 2
    header, rows, rest = _md_table(out / "runs.md")  # each run's tail
    assert [row[header.index("Tail acc. (%)")] for row in rows][:2] == ["35.03 †", "35.60 †"]
    assert rest == [markdown_escape(FOOTNOTES["†"])]
    runs_csv = pd.read_csv(out / "runs.csv")
    assert list(runs_csv[["tail_rounds", "evaluated_rounds"]].iloc[0]) == [3, 3]
    assert runs_csv["tail_warmup"].all()


def test_long_runs_over_three_seeds_are_not_marked(tmp_path):
    make_fake_batch(tmp_path, "long", seeds=(0, 1, 2), rounds=10,
                    methods={"FedAvg": (1.0, 1.0), "Sparsify(topk 0.9)": (0.12, 1.0)})
    runs = analysis.load_runs(tmp_path / "long")
    assert analysis.flag_notes(runs) == []
    shown = analysis.methods_display(analysis.method_table(runs), analysis.label_aliases(
        runs.summaries))
    assert shown.attrs["footnotes"] == [] and list(shown["Seeds"]) == ["3", "3"]
    assert not shown["Tail acc. (%)"].str.contains("†").any()


def test_one_short_experiment_among_long_ones_is_named(tmp_path):
    """Only the experiment that is short and the one with fewer seeds are named."""
    make_fake_batch(tmp_path, "b", seeds=(0, 1, 2), rounds=10,
                    methods={"FedAvg": (1.0, 1.0), "Sparsify(topk 0.9)": (0.12, 1.0)})
    write_run(tmp_path / "b", "Sparsify(topk 0.99)", 0, [20.0, 40.0, 60.0, 70.0], name="short",
              byte_fraction=0.02, flop_fraction=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notes = analysis.flag_notes(analysis.load_runs(tmp_path / "b"))
    assert notes[0].startswith("Tail includes warm-up rounds (marked † in the tables): 1 of 7 "
                               "runs, in 1 of 3 experiments (Sparsify(topk 0.99)), average all 4 "
                               "of their evaluated rounds (tail_rounds = 5).")
    assert notes[1].startswith("Fewer than 3 seeds (marked ‡ in the tables): 1 of 3 experiments "
                               "(Sparsify(topk 0.99): 1 seed) have fewer. ")
    assert len(notes) == 2


def _paired_rows(*rows) -> pd.DataFrame:
    """A paired_table with the columns paired_reading reads: (label, seeds, mean difference,
    paired and unpaired half-widths, warm-up)."""
    return pd.DataFrame([{"label": label, "baseline": "FedAvg", "seeds": n,
                          "mean_difference": mean, "paired_ci95": paired,
                          "unpaired_ci95": unpaired, "tail_warmup": warm}
                         for label, n, mean, paired, unpaired, warm in rows])


def test_the_paired_reading_says_what_the_table_shows():
    """The notebook said "the paired interval is far narrower" over a row of -15.89 ± 49.66
    paired against ± 14.95 unpaired; the words are now computed from the table."""
    issue = _paired_rows(("Hybrid", 2, -15.89, 49.66, 14.95, True))
    assert analysis.paired_reading(issue) == (
        "Over the seeds each method shares with FedAvg, the paired 95% interval is narrower "
        "than the unpaired one for 0 of 1 methods. It is wider for Hybrid (±49.66 paired, "
        "±14.95 unpaired): over 2 shared seeds the paired t has 1 degree(s) of freedom "
        "(t = 12.71). The paired interval excludes zero for 0 of 1. Read the marked rows with care "
        "(†: a tail compared averages warm-up rounds; ‡: fewer than 3 shared seeds).")
    five = _paired_rows(("A", 5, -3.0, 1.0, 4.0, False), ("B", 5, 0.5, 2.0, 4.0, False),
                        ("C", 5, 1.0, 3.0, 2.0, False))
    assert analysis.paired_reading(five, {"A": "a"}) == (
        "Over the seeds each method shares with FedAvg, the paired 95% interval is narrower "
        "than the unpaired one for 2 of 3 methods (median 38% of its width). It is wider for C "
        "(±3.00 paired, ±2.00 unpaired): pairing helps only where the differences vary less "
        "than the methods' own values (compare the spreads). The paired interval excludes zero for "
        "1 of 3 (a).")
    one = _paired_rows(("A", 1, -3.0, float("nan"), float("nan"), False))
    assert analysis.paired_reading(one) == ("No interval: each method shares one seed with "
                                            "FedAvg; run 3 seeds or more for a paired "
                                            "comparison.")


def test_the_analysis_gives_the_paired_reading_of_its_table(short):
    _, runs, outputs = short
    aliases = analysis.label_aliases(runs.summaries)
    assert outputs["readings"]["paired"] == analysis.paired_reading(
        analysis.paired_table(runs, "FedAvg"), aliases)
    assert outputs["readings"]["paired"].startswith(
        "Over the seeds each method shares with FedAvg, the paired 95% interval is narrower "
        "than the unpaired one for 2 of 2 methods")


def test_the_target_line_is_drawn_only_near_the_curves(short):
    """A 3-round run's accuracy was squashed into the bottom of an axis stretched to 90%."""
    _, runs, _ = short
    fig = analysis.accuracy_figure(runs, "round", "Round", target_accuracy=90.0)
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert not any(list(line.get_ydata()) == [90.0, 90.0] for line in ax.get_lines())
    assert ax.get_ylim()[1] < 60  # the curves end near 50%
    assert "target 90%: above the axis (not drawn)" in _legend_inside(fig)
    fig = analysis.accuracy_figure(runs, "round", "Round", target_accuracy=40.0)
    assert "target 40%" in _legend_inside(fig)  # within the curves' range: drawn


def test_a_log_axis_has_a_tick_near_every_point(tmp_path):
    """Uplink over more than three decades was labelled at powers of ten only: no tick near the
    hybrid's point at 0.29 MB."""
    make_fake_batch(tmp_path, "wide", seeds=(0,), rounds=6,
                    methods={"FedAvg": (1.0, 1.0), "Sparsify(topk 0.999)": (0.0004, 1.0),
                             "Hybrid(structured 0.4 adaptive + cost_weighted 0.95)": (0.06, 0.6)})
    runs = analysis.load_runs(tmp_path / "wide")
    points = list(runs.summaries["total_uplink_mb"])
    assert points == pytest.approx([4.8, 0.00192, 0.288])
    fig = analysis.tail_figure(runs, "total_uplink_mb", "Total uplink per run", "MB")
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks == pytest.approx([0.002, 0.01, 0.1, 0.2, 1, 5])  # 0.2: the hybrid's
    for point in points:
        assert min(max(t / point, point / t) for t in ticks) <= 1.6, point
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == ["0.002", "0.01", "0.1", "0.2", "1", "5"]
    boxes = sorted((t.get_window_extent().x0, t.get_window_extent().x1) for t in labels)
    assert all(a[1] < b[0] for a, b in zip(boxes, boxes[1:]))  # no label overlaps the next


def test_the_widths_table_marks_its_tails_and_seeds_too(tmp_path):
    """Two 3-round seeds of a structured method that evaluated its widths."""
    label = "Hybrid(structured 0.4 adaptive + cost_weighted 0.95)"
    for seed in (0, 1):
        folder = write_run(tmp_path, label, seed, [40.0, 50.0, 60.0], name=f"h{seed}",
                           byte_fraction=0.04, flop_fraction=0.6)
        summary = json.loads((folder / "summary.json").read_text())
        summary["widths"] = [{"ratio": r, "width": 1 - r, "train_flops_per_sample": 1e6,
                              "clients": 2, "tail_test_accuracy": 50.0 + 10 * r + seed,
                              "evaluations": 3} for r in (0.0, 0.4)]
        (folder / "summary.json").write_text(json.dumps(summary))
    runs = analysis.load_runs(tmp_path)
    shown = analysis.widths_display(analysis.width_table(runs),
                                    analysis.label_aliases(runs.summaries))
    assert shown.values.tolist() == [
        ["Hybrid(struct 0.4 adapt + cw 0.95)", "full (server)", "1.00", "1.00",
         f"50.50 ± {T_975_1 * 0.5:.2f} †", "2 ‡"],
        ["Hybrid(struct 0.4 adapt + cw 0.95)", "ratio 0.40", "0.60", "1.00",
         f"54.50 ± {T_975_1 * 0.5:.2f} †", "2 ‡"]]
    assert len(shown.attrs["footnotes"]) == 2
