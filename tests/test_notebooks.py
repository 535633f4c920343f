"""The notebooks: the experiment notebook through papermill on real MNIST (API and CLI) with its
HTML report, its parameters cell kept equal to ExperimentConfig, committed notebooks kept clean,
and the explorer's controls and Run button (driven without a browser)."""

import dataclasses
import html
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from fedprune_core.checks import choices as allowed
from fedprune_core.config import ConfigError, ExperimentConfig
from fedprune_core.tools import explore
from fedprune_core.tools.notebook import (CELL_PARAMETERS, EXPERIMENT_NOTEBOOK,
                                          config_from_namespace, execute_experiment,
                                          notebook_parameters_cell, parameters_source)

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "params" / "smoke.yaml"
FAST = {"data_fraction": 0.1, "num_threads": 1}  # smoke.yaml on 10% of MNIST, one core
ARTIFACTS = ["config.json", "metrics.csv", "clients.csv", "summary.json", "run.log",
             "accuracy_curve.png", "experiment_dashboard.png"]
FIELDS = dataclasses.fields(ExperimentConfig)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedprune_core", *args], cwd=REPO,
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def notebook_command(results_dir: Path, params: Path = SMOKE) -> list[str]:
    return ["notebook", "--params", str(params), "--results_dir", str(results_dir),
            "--data_fraction", "0.1", "--num_threads", "1", "--report", "html"]


# ---------------------------------------------------------------- committed notebooks

def test_parameters_cell_is_generated_from_the_config():
    import papermill

    assert notebook_parameters_cell() == parameters_source()
    params = papermill.inspect_notebook(str(EXPERIMENT_NOTEBOOK))
    # a short cell: the params file and the parameters a study changes, each unset (None)
    assert list(params) == ["params_file", *[f.name for f in FIELDS
                                             if f.name in CELL_PARAMETERS]]
    assert params["params_file"]["default"] == '"params/default.yaml"'
    assert {p["default"] for name, p in params.items() if name != "params_file"} == {"None"}
    lines = parameters_source().splitlines()
    assert len(lines) <= 16 and max(map(len, lines)) <= 92
    # unset: the params file's value; set: the cell's; papermill's injection (the CLI's whole
    # config, params_file "") replaces both
    ns = {"params_file": str(REPO / "params" / "smoke.yaml"), "rounds": None, "seed": 3}
    cfg = config_from_namespace(ns)
    assert (cfg.rounds, cfg.seed, cfg.run_name) == (2, 3, "smoke_test")
    assert config_from_namespace({"params_file": "", "rounds": 7}).rounds == 7


def test_committed_notebooks_carry_no_outputs():
    paths = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert {"experiment.ipynb", "analysis.ipynb", "explore.ipynb"} <= {p.name for p in paths}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata.kernelspec.name == "fedprune-sparse", path.name  # the .venv kernel
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (path.name, cell.id)


def test_a_fresh_clone_stays_clean_after_setup(tmp_path):
    """make venv installs the nbstripout filter (nbstripout --install --attributes
    .gitattributes); the committed notebooks and .gitattributes must already be what the
    filter writes, or a fresh clone's git status shows them modified."""
    import shutil

    nbstripout = Path(sys.executable).parent / "nbstripout"
    if shutil.which("git") is None or not nbstripout.exists() or not (REPO / ".git").exists():
        pytest.skip("needs git, a git checkout and nbstripout (the [notebooks] extra)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run([str(nbstripout), "--install", "--attributes", ".gitattributes"], cwd=clone,
                   check=True)
    # as the clone's own Makefile sets it up
    subprocess.run(["git", "config", "filter.nbstripout.extrakeys", _makefile_extra_keys(clone)],
                   cwd=clone, check=True)
    for path in (clone / "notebooks").glob("*.ipynb"):
        os.utime(path)  # git runs the clean filter again on what it sees touched
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                            text=True, check=True).stdout
    assert status == "", status
    for path in (clone / "notebooks").glob("*.ipynb"):
        stripped = subprocess.run([str(nbstripout), "-t"], stdin=open(path), capture_output=True,
                                  text=True, check=True).stdout
        assert stripped == path.read_text(), path.name


def test_build_notebooks_writes_what_is_committed(tmp_path, monkeypatch):
    """`make notebooks` regenerates the three notebooks byte for byte (then the filter, too,
    leaves them alone)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import build_notebooks
    finally:
        sys.path.remove(str(REPO / "scripts"))
    for name, cells in (("experiment", build_notebooks.CELLS),
                        ("explore", build_notebooks.EXPLORE_CELLS),
                        ("analysis", build_notebooks.ANALYSIS_CELLS)):
        build_notebooks.build(tmp_path / f"{name}.ipynb", cells)
        assert (tmp_path / f"{name}.ipynb").read_text() == \
            (REPO / "notebooks" / f"{name}.ipynb").read_text(), name


def test_explore_notebook_is_thin():
    nb = nbformat.read(REPO / "notebooks" / "explore.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 1 and code[0].rstrip().endswith("explorer()")
    assert "def " not in code[0] and "class " not in code[0]  # the logic lives in the package
    assert any("make lab" in c.source for c in nb.cells if c.cell_type == "markdown")


# ---------------------------------------------------------------- experiment notebook, API

@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    results = tmp_path_factory.mktemp("api") / "results"
    cfg = ExperimentConfig.from_yaml(SMOKE, overrides={"results_dir": str(results), **FAST})
    return cfg, execute_experiment(cfg, cwd=REPO)


def test_executed_notebook_lands_beside_the_run_artifacts(executed):
    cfg, out = executed
    run_dir = Path(cfg.results_dir) / "smoke_test"
    assert out == run_dir / "experiment.ipynb"
    for name in ARTIFACTS:
        assert (run_dir / name).stat().st_size > 0, name
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html_tables = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    rounds = next(t for t in html_tables if "<th>Test acc. (%)</th>" in t)  # per round
    assert "<th>Round</th>" in rounds and "<th>Uplink (MB)</th>" in rounds  # units, no index
    assert "<th></th>" not in rounds and "uplink_bytes" not in rounds
    assert "Tail test accuracy" in html_tables[0]  # the headline is the first thing shown
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5 and all(o.metadata["image/png"]["alt"] for o in images)
    assert (run_dir / "clients.png").exists()  # the per-client view
    recorded = nb.metadata.papermill.parameters
    assert recorded["run_name"] == "smoke_test" and recorded["rounds"] == 2
    assert recorded["data_fraction"] == 0.1 and recorded["results_dir"] == cfg.results_dir
    assert recorded["progress"] == "text"  # a widget bar would be saved frozen at 0%
    assert json.loads((run_dir / "config.json").read_text())["data_fraction"] == 0.1


# ---------------------------------------------------------------- experiment notebook, CLI

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("cli") / "results"
    return cli(*notebook_command(results)), results / "smoke_test"


def test_cli_executes_the_notebook_and_exports_a_code_free_html_report(cli_run):
    proc, run_dir = cli_run
    assert proc.returncode == 0, proc.stderr
    notebook, report = run_dir / "experiment.ipynb", run_dir / "experiment.html"
    assert f"executed notebook: {notebook}" in proc.stdout and f"report: {report}" in proc.stdout
    text = report.read_text()
    assert "data:image/png;base64," in text  # figures embedded: the report stands alone
    summary = json.loads((run_dir / "summary.json").read_text())
    # the headline first, the parameters folded at the end
    card = text.index("Tail test accuracy")
    assert f"{summary['tail_test_accuracy']:.2f}%" in text[card - 200:card]
    assert f"{summary['final_test_accuracy']:.2f}%" in text[card:card + 400]
    assert card < text.index("Per-round metrics") < text.index("<details")
    assert text.index("<details") < text.index("<code>num_threads</code>")
    assert "No description has been provided" not in text  # every figure has its alt text
    assert 'class="jp-InputArea-editor' not in text
    for cell in nbformat.read(EXPERIMENT_NOTEBOOK, as_version=4).cells:
        if cell.cell_type == "code":  # not one line of code reaches the report
            assert html.escape(cell.source.splitlines()[0]) not in text, cell.source


def test_the_cli_shows_progress_and_nothing_else(cli_run):
    """A line per client update with the time left, the round lines and the summary reach the
    terminal; papermill's cell banners, display objects' reprs, the parameter table, the
    kernel's TCP warning and nbconvert's alt-text warning do not."""
    proc, _ = cli_run
    out = proc.stdout + proc.stderr
    assert "round 1/2: client 1/2 done" in out and "ETA 00:" in out
    assert "Round   2/2 | acc" in out and "Finished: tail accuracy" in out
    for noise in ("Executing Cell", "Ending Cell", "<IPython.core.display", "clients_per_round",
                  "Kernel is running over TCP", "Alternative text", "Input Notebook",
                  "Executing notebook with kernel", "\n\n\n"):
        assert noise not in out, noise
    assert len(out.splitlines()) < 40, out


def test_a_report_of_a_run_made_without_the_notebook_is_a_clear_error(tmp_path, capsys):
    """`notebook --report html` after `run` of the same name: the run is finished, but there is
    no executed notebook to report on; one clear line, no traceback."""
    from fedprune_core.cli import main

    cfg = ExperimentConfig.from_yaml(SMOKE, overrides={"results_dir": str(tmp_path)})
    run_dir = tmp_path / cfg.run_name
    run_dir.mkdir()
    (run_dir / "config.json").write_text(cfg.to_json(label=cfg.method_label))
    (run_dir / "summary.json").write_text(json.dumps({"run_name": cfg.run_name}))
    code = main(["notebook", "--params", str(SMOKE), "--results_dir", str(tmp_path),
                 "--report", "html"])
    out, err = capsys.readouterr()
    assert code == 1 and "already finished with these parameters; skipping" in out
    assert "made without the experiment notebook" in err and "--overwrite" in err
    assert "Traceback" not in err and "1 of 1" not in err and len(err.splitlines()) == 1


def test_cli_skips_a_finished_run_and_leaves_its_notebook(cli_run):
    proc, run_dir = cli_run
    assert proc.returncode == 0, proc.stderr
    before = (run_dir / "experiment.ipynb").stat().st_mtime_ns
    again = cli(*notebook_command(run_dir.parent))
    assert again.returncode == 0, again.stderr
    assert "already finished with these parameters; skipping" in again.stdout
    assert (run_dir / "experiment.ipynb").stat().st_mtime_ns == before


def test_cli_params_typo_fails_before_any_notebook_is_written(tmp_path):
    params = tmp_path / "typo.yaml"
    params.write_text("rounds: 1\nnum_clients: 4\nclients_per_round: 2\nsparsity_ration: 0.9\n")
    proc = cli(*notebook_command(tmp_path / "results", params))
    assert proc.returncode == 2
    assert "sparsity_ration" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- explorer

def test_config_from_controls_maps_the_method_to_the_two_switches():
    flags = {name: (c.pruning, c.compression) for name in explore.METHODS
             for c in [explore.config_from_controls({"method": name, "rounds": 3})]}
    assert flags == {"FedAvg": (False, False), "Pruning only": (True, False),
                     "Sparsification only": (False, True), "Hybrid": (True, True)}
    cfg = explore.config_from_controls({"method": "Pruning only", "pruning_mode": "unstructured",
                                        "pruning_ratio": 0.3, "seed": 7})
    assert (cfg.pruning_mode, cfg.pruning_ratio, cfg.seed, cfg.rounds) == (
        "unstructured", 0.3, 7, ExperimentConfig().rounds)
    with pytest.raises(ConfigError, match="clients_per_round"):
        explore.config_from_controls({"num_clients": 4, "clients_per_round": 5})
    with pytest.raises(ConfigError, match="method"):
        explore.config_from_controls({"method": "FedProx"})


def test_explorer_controls_start_at_the_config_defaults():
    w = explore.explorer()
    defaults = {f.name: f.default for f in FIELDS}
    for name, control in w.controls.items():
        if name == "method":
            assert control.value == "Hybrid" and list(control.options) == list(explore.METHODS)
        elif name in explore.QUICK:
            assert control.value == explore.QUICK[name]
        else:
            assert control.value == defaults[name], name
        if name in defaults and name != "method" and (choices := allowed(
                ExperimentConfig.__dataclass_fields__[name])):
            assert list(control.options) == list(choices)
    assert (w.controls["pruning_ratio"].min, w.controls["pruning_ratio"].max) == (0.0, 0.9)
    assert (w.controls["sparsity_ratio"].min, w.controls["sparsity_ratio"].max) == (0.5, 0.999)
    w = explore.explorer(method="Sparsification only", rounds=3)
    assert w.controls["rounds"].value == 3 and w.controls["pruning_ratio"].disabled
    assert not w.controls["sparsity_ratio"].disabled
    with pytest.raises(ConfigError, match="roundz"):
        explore.explorer(roundz=3)


def row(r: int, accuracy: float) -> dict:
    return {"round": r, "test_accuracy": accuracy, "test_loss": 1.0, "uplink_bytes": 200_000,
            "cumulative_uplink_bytes": 200_000 * r, "uplink_dense_bytes": 4_000_000,
            "avg_transmitted_ratio": 0.05, "avg_pruning_ratio": 0.4, "wall_time_sec": 1.5}


def test_round_callback_redraws_the_figure_and_table():
    w = explore.explorer()
    cfg, rows = ExperimentConfig(rounds=3, run_name="explore_x"), []
    w.on_round_end(cfg, rows, row(1, 50.0))
    first = bytes(w.figure.value)  # the Image widget keeps a memoryview
    w.on_round_end(cfg, rows, row(2, 75.5))
    assert first.startswith(b"\x89PNG") and bytes(w.figure.value).startswith(b"\x89PNG")
    assert bytes(w.figure.value) != first
    assert w.table.value.count("<tr>") == 2 and "75.50" in w.table.value  # body rows only
    assert "0.400" in w.table.value  # cumulative uplink after round 2, in MB
    assert "round 2/3 of explore_x" in w.status.value


@pytest.mark.figures
def test_run_button_runs_an_experiment_with_a_live_figure(tmp_path, monkeypatch):
    results = tmp_path / "results"
    w = explore.explorer(results_dir=results, rounds=1, num_clients=4, clients_per_round=2,
                         local_epochs=1, data_fraction=0.05, num_threads=1)
    w.controls["clients_per_round"].value = 9  # invalid: shown, nothing runs
    w.run_button.click()
    assert "Invalid settings: clients_per_round" in w.status.value and not results.exists()
    assert not w.run_button.disabled

    w.controls["clients_per_round"].value = 2
    seen = []
    redraw = w.on_round_end
    monkeypatch.setattr(w, "on_round_end", lambda cfg, rows, r: (
        seen.append((cfg, w.run_button.disabled)), redraw(cfg, rows, r)))
    w.run_button.click()
    (cfg, disabled_while_running), = seen
    assert disabled_while_running and not w.run_button.disabled
    run_dir = results / cfg.run_name
    assert cfg.run_name.startswith("explore_") and cfg.progress == "off"
    assert [p.name for p in results.iterdir()] == [cfg.run_name]
    assert (run_dir / "summary.json").exists()
    assert json.loads((run_dir / "config.json").read_text())["rounds"] == 1
    assert bytes(w.figure.value).startswith(b"\x89PNG") and w.table.value.count("<tr>") == 1
    assert f"Finished {cfg.run_name}: tail accuracy" in w.status.value  # the headline
    assert bytes(w.clients.value).startswith(b"\x89PNG") and w.clients.layout.display is None


def test_notebooks_in_jupyterlab_write_to_the_project_results(tmp_path, monkeypatch):
    """A kernel opened from notebooks/ moves to the project root, so results/ is the project's."""
    from fedprune_core.tools.notebook import NOTEBOOKS, REPO_ROOT, use_project_root

    monkeypatch.chdir(NOTEBOOKS)
    use_project_root()
    assert Path.cwd() == REPO_ROOT
    monkeypatch.chdir(tmp_path)  # anywhere else (papermill's --cwd, the CLI) stays put
    use_project_root()
    assert Path.cwd() == tmp_path


def test_explorer_shows_no_broken_image_and_the_dense_line_from_round_one():
    w = explore.explorer()
    assert w.figure.layout.display == "none"  # an empty Image widget is a broken-image icon
    cfg, rows = ExperimentConfig(rounds=4, run_name="explore_x"), []
    w.on_round_end(cfg, rows, row(1, 50.0))
    assert w.figure.layout.display is None
    fig = explore.progress_figure(rows, "t", rounds=4)
    dense = next(line for line in fig.axes[1].lines if line.get_label() == "dense FedAvg")
    assert list(dense.get_xdata()) == [1, 2, 3, 4]  # whole at round 1, not one invisible point
    assert list(dense.get_ydata()) == pytest.approx([4.0, 8.0, 12.0, 16.0])


def test_a_failed_explorer_click_leaves_no_folder(tmp_path):
    results = tmp_path / "results"
    w = explore.explorer(results_dir=results, rounds=1, num_clients=4, clients_per_round=2,
                         data_fraction=0.05, num_threads=1, data_root=str(tmp_path / "nodata"))
    # No MNIST there, and its download goes to a closed local port.
    env = {k: os.environ.get(k) for k in ("http_proxy", "https_proxy", "no_proxy")}
    os.environ.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
                      no_proxy="")
    try:
        w.run_button.click()
    finally:
        for key, value in env.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    assert "DataUnavailableError" in w.status.value
    assert list(results.iterdir()) == [] and not (tmp_path / "nodata").exists()


# ---------------------------------------------------------------- the run report as printed

def test_the_run_report_pdf_opens_with_the_headline_and_wastes_no_page(executed):
    """experiment.pdf was 11 mostly empty pages with the headline ~9,000 px down: now the
    headline is on page 1, no page is blank, no figure split, the parameters print at the end."""
    import shutil

    from fedprune_core.tools.reports import export_pdf, find_chromium
    from pdf_checks import blank_pages, headings_ending_a_page, pages_text, split_images

    if find_chromium() is None or shutil.which("pdftotext") is None:
        pytest.skip("needs headless Chromium (make pdf-deps) and poppler-utils")
    _, notebook = executed
    pages = pages_text(export_pdf(notebook))
    summary = json.loads((notebook.parent / "summary.json").read_text())
    assert "Tail test accuracy" in pages[0]
    assert f"{summary['tail_test_accuracy']:.2f}%" in pages[0]
    assert "num_threads" in pages[-1] and "Parameters" in pages[-1]  # printed open, at the end
    assert len(pages) <= 6, len(pages)
    pdf = notebook.with_suffix(".pdf")
    assert blank_pages(pdf) == [] and split_images(pdf) == []
    headings = [line.lstrip("# ") for c in nbformat.read(EXPERIMENT_NOTEBOOK, 4).cells
                if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("#")]
    assert headings_ending_a_page(pages, headings) == []


# ---------------------------------------------------------------- saved in JupyterLab, git clean

def _makefile_extra_keys(root: Path = REPO) -> str:
    """The metadata keys the Makefile's setup (in `root`) has the nbstripout filter strip."""
    import re

    text = (root / "Makefile").read_text().replace("\\\n", " ")
    found = re.search(r'filter\.nbstripout\.extrakeys "([^"]*)"', text)
    return " ".join(found[1].split()) if found else ""


def _repo_with_the_filter(root: Path, extra_keys: str | None,
                          names=("experiment.ipynb", "analysis.ipynb", "explore.ipynb")) -> Path:
    """A git repository holding the working tree's notebooks (`names`), .gitattributes and
    .gitignore, committed through the nbstripout filter set up as `make venv` sets it up."""
    import shutil

    nbstripout = Path(sys.executable).parent / "nbstripout"
    repo = root / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for name in names:
        shutil.copy(REPO / "notebooks" / name, repo / "notebooks" / name)
    for name in (".gitattributes", ".gitignore"):
        shutil.copy(REPO / name, repo / name)

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=repo, capture_output=True, text=True, check=True).stdout
    git("init", "-q")
    subprocess.run([str(nbstripout), "--install", "--attributes", ".gitattributes"], cwd=repo,
                   check=True)
    if extra_keys:
        git("config", "filter.nbstripout.extrakeys", extra_keys)
    git("add", "-A")
    git("commit", "-q", "-m", "notebooks")
    return repo


def _makefile_save_hook(root: Path = REPO) -> str:
    """The post-save hook `make venv` configures for JupyterLab's contents manager."""
    import re

    text = (root / "Makefile").read_text()
    return re.search(r'"post_save_hook": "([\w.]+)"', text)[1]


def _save_as_jupyterlab_does(repo: Path, name: str, hook: str | None) -> None:
    """Open, run and save a notebook through jupyter_server's contents manager (what JupyterLab
    saves through, with the project's post-save `hook`), with what JupyterLab and the kernel
    put into it: the kernel's full language_info, outputs and execution counts, cell timing,
    collapsed and hidden flags, widget state."""
    from jupyter_server.services.contents.filemanager import FileContentsManager
    from nbformat.v4 import new_output

    manager = FileContentsManager(root_dir=str(repo), **({"post_save_hook": hook} if hook
                                                          else {}))
    nb = manager.get(f"notebooks/{name}")["content"]
    nb.metadata["language_info"] = {
        "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
        "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3", "version": "3.11.7"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {}, "version_major": 2, "version_minor": 0}}
    for n, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "code":
            cell.execution_count = n
            cell.outputs = [new_output("stream", name="stdout", text="round 1/2 ...\n")]
            cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000Z",
                                          "shell.execute_reply": "2026-01-01T00:00:01.000Z"}
            cell.metadata["scrolled"] = True
            cell.metadata["jupyter"] = {"outputs_hidden": False, "source_hidden": False}
        else:
            cell.metadata["jp-MarkdownHeadingCollapsed"] = True
    manager.save({"type": "notebook", "format": "json", "content": nb}, f"notebooks/{name}")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def test_a_notebook_saved_in_jupyterlab_leaves_git_status_clean(tmp_path):
    """Opening a notebook in JupyterLab, running it and saving it left `git status` dirty.
    Two causes, two settings of `make venv`: the filter kept the kernel's language_info (the
    Makefile's extra keys strip it and the other keys JupyterLab adds), and git lists a file
    whose size changed as modified without running the filter (the post-save hook refreshes
    the index entry when the stripped content is unchanged). Either one missing leaves the
    notebook listed. One notebook: each run of the filter costs a second importing nbformat."""
    import shutil

    if shutil.which("git") is None or not (Path(sys.executable).parent / "nbstripout").exists():
        pytest.skip("needs git and nbstripout (the [notebooks] extra)")
    keys, hook = _makefile_extra_keys(), _makefile_save_hook()
    assert "metadata.language_info" in keys.split() and "cell.metadata.jupyter" in keys.split()
    assert hook == "fedprune_core.tools.notebook.refresh_git_index"
    repo = _repo_with_the_filter(tmp_path, keys, names=("experiment.ipynb",))
    _save_as_jupyterlab_does(repo, "experiment.ipynb", hook)
    assert _git(repo, "status", "--porcelain").stdout == ""
    assert _git(repo, "diff", "--cached", "--quiet").returncode == 0  # nothing staged either
