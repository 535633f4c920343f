"""Write the three notebooks (experiment, explore, analysis) from their cell sources.

They are written exactly as git's nbstripout filter (set up by `make venv`) would store them:
no outputs, cell ids "0", "1", ..., the project's kernel. So a fresh clone's `git status` stays
clean after setup, and the filter never rewrites a committed notebook.

The experiment notebook's parameters cell comes from ExperimentConfig; rerun this after adding a
parameter:
    .venv/bin/python scripts/build_notebooks.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from fedprune_core.tools.notebook import EXPERIMENT_NOTEBOOK, NOTEBOOKS, parameters_source

EXPLORE_NOTEBOOK = NOTEBOOKS / "explore.ipynb"
ANALYSIS_NOTEBOOK = NOTEBOOKS / "analysis.ipynb"
# The Jupyter kernel `make venv` installs (Makefile KERNEL_NAME): the project's .venv.
KERNELSPEC = {"display_name": "FedPrune-Sparse (.venv)", "language": "python",
              "name": "fedprune-sparse"}

CELLS = [
    ("md", """# FedPrune-Sparse: one experiment

Federated learning on non-IID data with client-side pruning (less local compute) and sparsified
client-to-server updates with error feedback (less uplink). This notebook is thin: it reads its
parameters, calls `fedprune_core`, and shows what the run wrote to `results/<run_name>/`.

Run it interactively in JupyterLab (`make lab`), or through papermill with a parameter file:
`make run` (the default hybrid experiment) or `make ablations` (every file in `params/ablations/`).
Every parameter is documented in the next cell and in README.md."""),
    ("params", parameters_source()),
    ("code", """from IPython.display import Image, Markdown, display
import pandas as pd

from fedprune_core import run_experiment
from fedprune_core.tools.notebook import config_from_namespace, use_project_root
from fedprune_core.run.loop import describe_partition

use_project_root()  # opened in JupyterLab from notebooks/: results/ is the project's
pd.set_option("display.max_colwidth", None)  # a long method label is shown whole
config = config_from_namespace(globals())  # validates every parameter before any work
display(Markdown(f"**Method:** {config.method_label} &nbsp; **Run:** `{config.run_name or '(timestamp)'}`"))
pd.Series(config.science_dict(), name="value").to_frame()"""),
    ("md", """## Partition

Training samples of each class on each client. With `partition = "shards"` each client holds
`classes_per_client` label shards: the label skew that makes federated averaging hard."""),
    ("code", """partition_table = describe_partition(config)
partition_table"""),
    ("md", """## Training

One line per round; `run.log` in the run folder also has a line per client. An interrupted run
keeps its checkpoint: set `resume = True` to continue it."""),
    ("code", "result = run_experiment(config)"),
    ("md", """## Per-round metrics

Accuracy and loss on the test set, the fraction of coordinates sent, the clients' mean pruning
ratio, real uplink bytes (from the encoded messages) against dense FedAvg's, client training
FLOPs and the simulated round time (the slowest selected client)."""),
    ("code", """columns = ["round", "test_accuracy", "test_loss", "train_loss", "avg_transmitted_ratio",
           "avg_pruning_ratio", "uplink_bytes", "uplink_dense_bytes", "client_train_flops",
           "simulated_round_time_sec", "wall_time_sec"]
result.metrics[columns].round(4)"""),
    ("md", "## Figures (300 DPI PNG in the run folder)"),
    ("code", """for name in ["experiment_dashboard", "accuracy_curve", "compression_pruning_curve",
             "round_time_curve", "partition"]:
    display(Markdown(f"**{name}.png**"))
    display(Image(filename=str(result.run_dir / f"{name}.png"), width=760))"""),
    ("md", """## Diagnostics: what explains the accuracy

`diagnostics.csv` holds, at every evaluation, the global model's recall per class and the share
of predictions per class (a model leaning to a few classes shows as bright rows in one and a
skewed histogram in the other) and, for structured pruning, the accuracy of the sub-model at each
pruning ratio the clients used: sub-models much better than the full-width model point at units
averaged over too few clients."""),
    ("code", """diagnostics = pd.read_csv(result.run_dir / "diagnostics.csv")
for name in ["class_recall", "width_accuracy"]:
    if (result.run_dir / f"{name}.png").exists():
        display(Markdown(f"**{name}.png**"))
        display(Image(filename=str(result.run_dir / f"{name}.png"), width=760))
last = diagnostics[diagnostics["round"] == diagnostics["round"].max()]
last.pivot_table(index="key", columns="metric", values="value").round(2)"""),
    ("md", """## Summary

The headline is `tail_test_accuracy`, the mean over the last `tail_rounds` evaluated rounds
(non-IID rounds swing by many points). `final_test_accuracy` is one round; `best_test_accuracy`
is the maximum over evaluations, i.e. selected on the test set. `never_trained_units` counts the
units no client has trained: they are zero in the evaluated and saved model."""),
    ("code", """headline = ["tail_test_accuracy", "tail_rounds", "final_test_accuracy", "best_test_accuracy",
            "best_round", "never_trained_units", "total_uplink_mb", "compression_x",
            "flop_saving_pct", "pruning_ratio_mean"]
display(pd.Series({k: result.summary[k] for k in headline}, name="value").to_frame())
pd.Series({k: v for k, v in result.summary.items() if k not in headline + ["artifacts"]},
          name="value").to_frame()"""),
]

EXPLORE_CELLS = [
    ("md", """# FedPrune-Sparse: explore interactively

Pick a method (FedAvg, pruning only, sparsification only, or the hybrid), its pruning and
sparsification settings and the size of the federation, then press **Run**. A short experiment
runs in this kernel; the accuracy and cumulative-uplink plot and the per-round table grow after
every round. Every click writes a new run folder `explore_<timestamp>` in `results_dir` (the
message under the controls names it) with the same artifacts as any other run, so the analysis
notebook can read it too.

The controls start at `ExperimentConfig`'s defaults, except for a quick first click: 5 rounds,
1 local epoch, 20% of the training data.
Any other parameter can be fixed by passing it, e.g. `explorer(local_epochs=1, lr=0.05)`."""),
    ("code", """from fedprune_core.tools.explore import explorer
from fedprune_core.tools.notebook import use_project_root

use_project_root()  # results/ is the project's, as on the command line
explorer()"""),
    ("md", """The controls are Jupyter widgets: open this notebook in JupyterLab (`make lab`), where they
are live. A saved or exported copy shows no widgets (they need a running kernel); for a
recorded run with a report use the experiment notebook (`make run`)."""),
]


ANALYSIS_CELLS = [
    ("md", """# Analysis across runs

This notebook reads every finished run under `results/` and produces the dissertation's comparison tables and figures. All the work is done by `fedprune_core.analysis`; the notebook only calls it and shows what it wrote.

* A row is one *experiment*: runs with the same `label` (e.g. `FedAvg`, `Sparsify(topk 0.95)`) and the same value of every parameter but `seed`, each with its own seed. Runs that share a label but differ in a parameter are separate rows, their labels extended with the values that differ (e.g. `FedAvg [local_epochs=1]`); a run repeating a seed is a row of its own.
* Numbers are given as **mean ± 95% confidence interval over seeds** (Student-t); with a single seed only the mean is shown.
* Runs without `summary.json` are unfinished, and runs whose files cannot be read are damaged: both are skipped, and the notes below name them.

Run it headless from the repository root (`make analysis`):

```
python -m papermill notebooks/analysis.ipynb results/analysis/analysis.ipynb --cwd . -p target_accuracy 95
```"""),
    ("params", """results_dir = "results"  # relative to the working directory (the repository root)
target_accuracy = 90.0  # test accuracy (%) for the rounds-to-target column
out_dir = None  # None: <results_dir>/analysis"""),
    ("code", """from IPython.display import Image, Markdown, display

from fedprune_core import analysis

# Opened from notebooks/ in JupyterLab, the results folder is one level up.
results_dir = analysis.resolve_results_dir(results_dir)
outputs = analysis.analyze(results_dir, out_dir=out_dir, target_accuracy=target_accuracy)


def show_table(name):
    display(Markdown(outputs["tables"][name]["md"].read_text()))


def show_figure(name):
    display(Image(filename=str(outputs["figures"][name]["png"]), width=720))


notes = "".join(f"- {note}\\n" for note in outputs["notes"]) or "- Every run was read; none was set apart.\\n"
display(Markdown(f"**Notes on the runs read**\\n\\n{notes}\\nTables and figures: `{outputs['out_dir']}`"))"""),
    ("md", """## Runs

Every finished run, one row each: final and best test accuracy (%), the first round that reached the target accuracy (– if never), total uplink traffic in MB, compression (dense FedAvg bytes / bytes actually sent), client training GFLOPs and the saving against dense training, and wall-clock and simulated time in seconds."""),
    ("code", 'show_table("runs")'),
    ("md", """## Experiments compared

One row per experiment. Accuracies and rounds to the target are mean ± 95% CI over seeds; when not every seed reached the target, the count of those that did is given and the mean is over them. Costs are means (their CIs are in `methods_stats`). This is the table to cite: `methods.tex` is ready for LaTeX (booktabs)."""),
    ("code", 'show_table("methods")'),
    ("md", """## Accuracy per round

Mean test accuracy over seeds against the communication round, with a 95% CI band; the dotted line is the target accuracy. It shows how fast each method learns per round, regardless of what a round costs."""),
    ("code", 'show_figure("accuracy_vs_round")'),
    ("md", """## Accuracy per megabyte sent

The same accuracy against the cumulative uplink traffic (log scale). This is the communication-efficiency figure: a curve further to the left reaches the same accuracy with fewer bytes from the clients."""),
    ("code", 'show_figure("accuracy_vs_uplink")'),
    ("md", """## Accuracy per unit of client computation

Accuracy against the cumulative training work of the clients in GFLOPs. Pruned (smaller) models move their curves to the left: less computation on the devices for the same accuracy."""),
    ("code", 'show_figure("accuracy_vs_flops")'),
    ("md", """## Pruning ratio per client

For each method that prunes: the distribution, over rounds and seeds, of each client's pruning ratio. With adaptive ratios, weaker clients (slower compute or links) should sit higher. When no run prunes, the figure says so."""),
    ("code", 'show_figure("client_pruning_ratios")'),
    ("md", """## The data partition

Training samples per class for each client, in the first run of the first method. The label skew seen here (few classes per client under `shards`) is the non-IID setting all methods are compared under; runs with the same seed share it."""),
    ("code", 'show_figure("partition")'),
    ("md", """## Files

Everything above is in the output folder: tables as `.csv`, `.md` and `.tex`, figures as `.png` (300 DPI) and `.pdf`, and the notes as `notes.md`."""),
    ("code", """for kind in ("tables", "figures"):
    for name, paths in outputs[kind].items():
        print(f"{name:24s}", ", ".join(path.name for path in paths.values()))"""),
]


def build(path: Path = EXPERIMENT_NOTEBOOK, cells: list = CELLS) -> None:
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    for i, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        if kind == "params":
            cell.metadata["tags"] = ["parameters"]
        cell.id = str(i)  # what nbstripout makes of any id
        nb.cells.append(cell)
    path.write_text(nbformat.writes(nb) + "\n")


if __name__ == "__main__":
    for path, cells in ((EXPERIMENT_NOTEBOOK, CELLS), (EXPLORE_NOTEBOOK, EXPLORE_CELLS),
                        (ANALYSIS_NOTEBOOK, ANALYSIS_CELLS)):
        build(path, cells)
        print(f"wrote {path}")
