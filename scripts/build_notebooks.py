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
client-to-server updates with error feedback (less uplink). The headline comes first; figures,
the per-client view, the per-round table and the diagnostics follow; every parameter is listed,
folded, at the end. The run folder `results/<run_name>/` holds every number shown here.

Run it in JupyterLab (`make lab`: edit the next cell), or through papermill: `make run`, or
`python -m fedprune_core notebook --params FILE.yaml --report html`."""),
    ("params", parameters_source()),
    ("code", """from IPython.display import HTML, Markdown, display
import pandas as pd

from fedprune_core import run_experiment
from fedprune_core.tools import notebook as report
from fedprune_core.tools.notebook import config_from_namespace, use_project_root

use_project_root()  # opened in JupyterLab from notebooks/: results/ is the project's
config = config_from_namespace(globals())  # validates every parameter before any work"""),
    # Training prints a line per client update and per round (progress `text` under papermill,
    # a bar in JupyterLab): live progress, not part of the report.
    ("md-report-hidden", """## Training

A line per client update with the time left, and a line per round; `run.log` in the run folder
keeps them. An interrupted run keeps its checkpoint: set `resume = True` to continue it."""),
    ("code-report-hidden", "result = run_experiment(config)"),
    ("md", """## Headline"""),
    ("code", "display(HTML(report.summary_card(result.summary, config)))"),
    ("md", """## Figures

Accuracy against rounds and against cumulative uplink, the fraction of coordinates sent beside
the clients' mean pruning ratio, and the measured and simulated round time. Each panel is also a
figure of its own in the run folder (300 DPI PNG)."""),
    ("code", """report.show_figure(result.run_dir / "experiment_dashboard.png",
                   "Dashboard: test accuracy against round and against cumulative uplink, sent "
                   "fraction and mean pruning ratio, measured and simulated round time")"""),
    ("md", """## Clients

Per client (a row each): its capability (compute and uplink of its profile), and per round it
was selected its pruning ratio, the size of its update and its training loss (grey: not selected
that round). `clients.csv` has every number."""),
    ("code", """clients_png = report.client_figure(result)
if clients_png:
    report.show_figure(clients_png, "Per client: compute and uplink capability, and per round "
                                    "its pruning ratio, uplink kilobytes and training loss")"""),
    ("md", """## Per-round metrics

Test accuracy and loss, the mean training loss of the selected clients, the coordinates sent
against the model size, their mean pruning ratio, uplink megabytes (from the encoded messages)
beside dense FedAvg's, the clients' training GFLOP and the round's simulated and measured time.
Every column of `metrics.csv` is in the run folder."""),
    ("code", "display(HTML(report.round_table(result.metrics)))"),
    ("md", """## Diagnostics: what explains the accuracy

`diagnostics.csv` holds, at every evaluation, the global model's recall per class and the share
of predictions per class (a model leaning to a few classes shows as bright rows); `widths.csv`,
for structured pruning, the accuracy of the global model at each width clients train, beside the
full width the server holds (the headline): sub-models much better than the full width point at
units averaged over too few clients."""),
    ("code", """report.show_figure(result.run_dir / "class_recall.png",
                   "Recall of each class of the global model per round")"""),
    ("code", """if (result.run_dir / "width_accuracy.png").exists():
    report.show_figure(result.run_dir / "width_accuracy.png",
                       "Test accuracy at each width clients train, per round and against "
                       "training FLOPs a sample")"""),
    ("code", """diagnostics = pd.read_csv(result.run_dir / "diagnostics.csv")
if not diagnostics.empty:
    last = diagnostics[diagnostics["round"] == diagnostics["round"].max()]
    classes = last.pivot_table(index="metric", columns="class", values="value").round(1)
    classes.index = [{"class_recall": "Recall (%)", "predicted_share": "Share of predictions (%)"}
                     .get(k, k) for k in classes.index]
    display(Markdown(f"Last evaluated round ({int(last['round'].max())}), per class:"))
    display(HTML(classes.to_html(classes="fp-table", border=0)))"""),
    ("md", """## Partition

Training samples of each class on each client (`partition.csv`). With `partition = "shards"` each
client holds `classes_per_client` label shards: the label skew that makes federated averaging
hard."""),
    ("code", """report.show_figure(result.run_dir / "partition.png",
                   "Training samples of each class on each client")"""),
    ("md", """## Parameters and every summary number

Folded: click to open (the PDF prints them open). `config.json` and `summary.json` in the run
folder hold the same."""),
    ("code", """display(HTML(report.parameters_folded(config)))
display(HTML(report.summary_folded(result.summary)))"""),
]

EXPLORE_CELLS = [
    ("md", """# FedPrune-Sparse: explore interactively

Pick a method (FedAvg, pruning only, sparsification only, or the hybrid), its pruning and
sparsification settings and the size of the federation, then press **Run**. A short experiment
runs in this kernel; the accuracy and cumulative-uplink plot and the per-round table grow after
every round, and when it ends the message gives its tail accuracy (the headline: the mean of the
last evaluated rounds) and a figure shows each client's capability, pruning ratio, uplink and
loss. Every click writes a new run folder `explore_<timestamp>` in `results_dir` (the
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

The comparison tables and figures of one batch (`batch`: the runs in `results/<batch>/`, as
`make ablations BATCH=name` writes them) or of every finished run under `results/`. All the work
is done by `fedprune_core.analysis`; this notebook calls it and shows what it wrote.

* A row is one *experiment*: runs with the same `label` and the same value of every parameter
  but `seed`, each with its own seed. Runs that share a label but differ in a parameter are rows
  of their own, labelled with the values that differ (`FedAvg [local_epochs=1]`); a run repeating
  a seed is a row of its own. Analyse one batch to keep smoke runs, explorer clicks and
  `make run` out of the comparison.
* Tables give **mean ± 95% confidence interval over seeds** (Student-t); one seed: the mean.
  Figures shade `bands`: `auto` draws ±1 standard deviation below four seeds (a 95% interval over
  two seeds is ±12.7 standard deviations), the 95% interval from four.
* Every method keeps one colour, marker and line style in every figure; legends and the
  printed tables use short labels, the legend key at the end maps them to the full labels (the
  CSV files keep those).
* Marks in the tables: † a tail accuracy that averages warm-up rounds (more than half of the
  run's evaluated rounds: a short run), ‡ fewer than 3 seeds; a footnote under each table and
  the notes below say which.
* Runs of different lengths are drawn against rounds in a panel per length.

From the repository root: `make analysis BATCH=ablations BASELINE=FedAvg`, or
`python -m papermill notebooks/analysis.ipynb OUT.ipynb --cwd . -p batch ablations`."""),
    ("params", """results_dir = "results"  # relative to the working directory (the repository root)
batch = None  # a batch's folder in results_dir (its runs alone); None: every finished run
baseline = "FedAvg"  # label the paired table compares with, drawn first
bands = "auto"  # shading over seeds: auto, ci95, std or none
target_accuracy = 90.0  # test accuracy (%) for the rounds-to-target column and the target line
out_dir = None  # None: <results_dir>/analysis, or <results_dir>/<batch>/analysis"""),
    ("code", """from IPython.display import HTML, Image, Markdown, display

from fedprune_core import analysis

# Opened from notebooks/ in JupyterLab, the results folder is one level up.
results_dir = analysis.resolve_results_dir(results_dir)
outputs = analysis.analyze(results_dir, out_dir=out_dir, target_accuracy=target_accuracy,
                           baseline=baseline, batch=batch or None, bands=bands)


def show_table(name):
    if name in outputs["tables"]:
        display(Markdown(outputs["tables"][name]["md"].read_text()))
    else:
        display(Markdown(f"*No {name} table for these runs (see the notes).*"))


def show_figure(name, alt):
    png = outputs["figures"][name]["png"]
    display(Image(filename=str(png), width=analysis.display_width(png), alt=alt))


notes = ("".join(f"- {note}\\n" for note in outputs["notes"])
         or "- Every run was read; none was set apart.\\n")
shown = {"ci95": "95% CI over seeds", "std": "±1 SD over seeds", "none": "none"}[outputs["bands"]]
display(Markdown(f"**Runs:** `{results_dir / (batch or '')}` &nbsp; **Baseline:** {baseline} "
                 f"&nbsp; **Bands:** {shown}\\n\\n**Notes on the runs**\\n\\n{notes}\\n"
                 f"Tables and figures: `{outputs['out_dir']}`"))"""),
    ("md", """## Experiments compared

One row per experiment: the tail accuracy (mean of the last `tail_rounds` evaluated rounds, the
headline), the final round and the best round (selected on the test set), rounds to the target
(over the seeds that reached it, with how many did), uplink MB and compression, the clients'
training GFLOP an update and FLOP saving, wall time. Accuracies carry their 95% CI over seeds;
costs are means (their CIs are in `methods_stats`). `methods.tex` is ready for LaTeX."""),
    ("code", 'show_table("methods")'),
    ("md", """## Accuracy against what it cost

One point per method: its tail accuracy against its total uplink per run, and against its
clients' total training GFLOP (log scales); error bars as the bands. Up and to the left is
better. Compare methods of the same run length only."""),
    ("code", 'show_figure("tail_vs_uplink", "Tail accuracy of each method against its uplink MB")'),
    ("code", 'show_figure("tail_vs_flops", "Tail accuracy of each method against its client GFLOP")'),
    ("md", """## Paired differences from the baseline

Runs of one seed share their random numbers across methods, so a seed's difference from the
baseline can cancel the luck the seed brings to both: the paired interval is taken over those
differences, the unpaired one treats the two methods' seeds as independent. Under the table:
what these runs show."""),
    ("code", """show_table("paired")
if "paired" in outputs["readings"]:
    display(Markdown(analysis.tables.markdown_escape(outputs["readings"]["paired"])))"""),
    ("md", """## Cost to accuracy

What each method spent to first reach 90% and 97% of the baseline's plateau (its mean tail
accuracy), and the target accuracy: rounds, uplink MB, client training GFLOP and simulated
seconds (the capability profiles and the round deadline), means over the seeds that got there
(with how many did), and the simulated time as the paired ratio to the baseline's (below 1 is
sooner)."""),
    ("code", 'show_table("cost_to_accuracy")'),
    ("md", """## Accuracy at a budget

Each method's accuracy (the mean of its last 5 evaluated rounds within the budget) at 25, 50 and
100% of the baseline's total client GFLOP and uplink MB, and its paired difference from the
baseline at the same budget: a method behind at the end may be ahead for what a device can
afford."""),
    ("code", 'show_table("accuracy_at_budget")'),
    ("md", """## Accuracy per round

Mean test accuracy over seeds against the round, with its band; the dashed line is the target
accuracy, drawn when it lies near the curves (the legend says when it is off the axis). A panel
per run length when the runs differ in length."""),
    ("code", 'show_figure("accuracy_vs_round", "Test accuracy of each method against the round")'),
    ("md", """## Accuracy per megabyte sent, and per GFLOP trained

The same accuracy against the cumulative uplink traffic and against the clients' cumulative
training work (log scales): a curve further to the left reaches the same accuracy for less."""),
    ("code", 'show_figure("accuracy_vs_uplink", "Test accuracy against cumulative uplink MB")'),
    ("code", 'show_figure("accuracy_vs_flops", "Test accuracy against cumulative client GFLOP")'),
    ("md", """## Accuracy at each width

Structured methods: the tail accuracy at each width clients train, beside the full width the
server holds (the headline)."""),
    ("code", 'show_table("widths")'),
    ("md", """## Pruning ratio per client

For each method that prunes: each client's pruning ratio over rounds and seeds. With adaptive
ratios, weaker clients (slower compute or links) should sit higher."""),
    ("code", 'show_figure("client_pruning_ratios", "Pruning ratio of each client, per method")'),
    ("md", """## The data partition

Training samples per class for each client, in the first run of the first method; runs with the
same seed share it."""),
    ("code", 'show_figure("partition", "Training samples of each class on each client")'),
    ("md", """## Runs

Every finished run, one row each (`runs.csv` has the full names and digits)."""),
    ("code", 'show_table("runs")'),
    ("md", """## Legend key

Each short label (figures and printed tables), its style in the figures, and the full label
the CSV files use."""),
    ("code", 'show_table("legend")'),
    ("md", """## Files

Tables as `.csv`, `.md` and `.tex`, figures as `.png` (300 DPI) and `.pdf`, the notes as
`notes.md`, in the output folder."""),
    ("code", """for kind in ("tables", "figures"):
    for name, paths in outputs[kind].items():
        print(f"{name:24s}", ", ".join(path.name for path in paths.values()))"""),
]


def build(path: Path = EXPERIMENT_NOTEBOOK, cells: list = CELLS) -> None:
    # No language_info: the kernel fills it in when the notebook runs, and the nbstripout filter
    # strips it (Makefile), so a notebook saved from JupyterLab stays clean in git.
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC})
    for i, (kind, source) in enumerate(cells):
        kind, _, hidden = kind.partition("-")
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        if kind == "params":
            cell.metadata["tags"] = ["parameters"]
        if hidden == "report-hidden":  # shown in JupyterLab, left out of HTML/PDF reports
            cell.metadata["tags"] = ["remove-cell"]
        cell.id = str(i)  # what nbstripout makes of any id
        nb.cells.append(cell)
    path.write_text(nbformat.writes(nb) + "\n")


if __name__ == "__main__":
    for path, cells in ((EXPERIMENT_NOTEBOOK, CELLS), (EXPLORE_NOTEBOOK, EXPLORE_CELLS),
                        (ANALYSIS_NOTEBOOK, ANALYSIS_CELLS)):
        build(path, cells)
        print(f"wrote {path}")
