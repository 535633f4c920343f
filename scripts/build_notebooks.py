"""Write notebooks/experiment.ipynb and notebooks/explore.ipynb from their cell sources
(outputs-free, stable cell ids).

The parameters cell comes from ExperimentConfig; rerun this after adding a parameter:
    .venv/bin/python scripts/build_notebooks.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from fedprune_core.tools.notebook import EXPERIMENT_NOTEBOOK, NOTEBOOKS, parameters_source

EXPLORE_NOTEBOOK = NOTEBOOKS / "explore.ipynb"

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
config = config_from_namespace(globals())  # validates every parameter before any work
display(Markdown(f"**Method:** {config.method_label} &nbsp; **Run:** `{config.run_name or '(timestamp)'}`"))
pd.Series(config.science_dict(), name="value").to_frame().T"""),
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


def build(path: Path = EXPERIMENT_NOTEBOOK, cells: list = CELLS) -> None:
    nb = new_notebook(metadata={
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                       "name": "python3"},
        "language_info": {"name": "python"}})
    for i, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        if kind == "params":
            cell.metadata["tags"] = ["parameters"]
        cell.id = f"cell-{i:02d}"
        nb.cells.append(cell)
    path.write_text(nbformat.writes(nb) + "\n")


if __name__ == "__main__":
    for path, cells in ((EXPERIMENT_NOTEBOOK, CELLS), (EXPLORE_NOTEBOOK, EXPLORE_CELLS)):
        build(path, cells)
        print(f"wrote {path}")
