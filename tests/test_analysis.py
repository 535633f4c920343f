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
    notebook, its PDF or None). The command prints nothing: no kernel warning, no banner."""
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
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr
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
    assert outputs["notes"] == []  # no stray run split FedAvg into experiments
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
