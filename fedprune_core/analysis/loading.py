"""Loading run folders into pandas, and deciding which runs are seeds of one experiment.

A row of the comparison is one experiment: runs pooled as its seeds share their label and every
parameter that decides the numbers (config.experiment_params, the one definition the resume and
the batch runner use too), and have distinct seeds. Runs sharing a label that differ in any such
parameter are separate rows whose labels say what differs ("FedAvg [local_epochs=1]"); a run
repeating a seed already in its experiment is a row of its own ("FedAvg [run smoke_b]"), since a
repeat is not an independent sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import experiment_params

BYTES_PER_MB = 1e6  # decimal megabytes
FLOPS_PER_GFLOP = 1e9
BASELINE_LABEL = "FedAvg"  # listed first in tables and legends when present

# summary.json's numbers that the tables and figures compute with: each must be a number (or
# null), or the run is skipped as damaged.
SUMMARY_NUMBERS = ("rounds_completed", "tail_test_accuracy", "final_test_accuracy",
                   "best_test_accuracy", "best_round", "total_uplink_mb", "compression_x",
                   "total_client_train_gflops", "flop_saving_pct", "wall_time_sec",
                   "simulated_time_sec", "tail_rounds")
# metrics.csv's columns that they compute with: present and numeric.
METRIC_COLUMNS = ("round", "test_accuracy", "cumulative_uplink_bytes",
                  "cumulative_client_train_flops")

# Config fields copied next to each run's summary, for tables and figure titles.
CONFIG_FIELDS = ("dataset", "model", "partition", "rounds", "pruning_mode", "pruning_ratio",
                 "sparsify_method", "sparsity_ratio", "error_feedback", "aggregation",
                 "local_epochs", "batch_size", "lr")


@dataclass
class RunTable:
    """The finished runs of a results folder as DataFrames keyed by run_name, label and seed."""

    # one row per run: summary.json numbers + CONFIG_FIELDS, the rounds it evaluated
    # (`evaluated_rounds`) and whether its tail averages warm-up rounds (`tail_warmup`)
    summaries: pd.DataFrame
    metrics: pd.DataFrame  # one row per (run, round), from metrics.csv
    clients: pd.DataFrame  # one row per (run, round, selected client), from clients.csv
    partitions: pd.DataFrame  # one row per (run, client), from partition.csv


class _Unreadable(Exception):
    """A run folder whose files cannot be read: skipped with a warning naming it."""


def resolve_results_dir(path: str | Path = "results") -> Path:
    """Return `path`, or `../path` if only that exists (a notebook opened from notebooks/)."""
    path = Path(path)
    if path.is_dir() or path.is_absolute() or not (Path("..") / path).is_dir():
        return path
    return Path("..") / path


def load_runs(results_dir: str | Path, exclude: tuple[str, ...] = ("analysis",)) -> RunTable:
    """Load every finished run folder under `results_dir`: directly in it, or in a batch's
    folder inside it (`results/<batch>/<run>`), named by its path from `results_dir`.

    A run folder has config.json and metrics.csv; other folders (analysis output, benchmarks,
    a batch's logs) hold none. A run without summary.json is unfinished (summary.json is written
    last), and one whose files cannot be read is damaged: both are skipped with a warning naming
    them. Raises FileNotFoundError if no run is finished.
    """
    results_dir = Path(results_dir)
    try:
        if not results_dir.is_dir():
            raise FileNotFoundError(f"No finished runs: {results_dir.resolve()} is not a folder")
        folders = _run_folders(results_dir, results_dir, exclude)
    except PermissionError as err:  # a folder this user cannot list
        raise FileNotFoundError(f"results_dir: {results_dir} cannot be read ({err.strerror}); "
                                f"expected a folder of run folders") from None
    unfinished = [p for p in folders if not (p / "summary.json").is_file()]
    if unfinished:
        warnings.warn(f"Skipping {len(unfinished)} unfinished run(s) without summary.json in "
                      f"{_display(str(results_dir))}: "
                      f"{', '.join(_name(p, results_dir) for p in unfinished)}", stacklevel=2)
    loaded = []
    for folder in (p for p in folders if p not in unfinished):
        try:
            loaded.append(_read_run(folder, _name(folder, results_dir)))
        except _Unreadable as err:
            warnings.warn(f"Skipping run {_name(folder, results_dir)} in "
                          f"{_display(str(results_dir))}: {err}", stacklevel=2)
    if not loaded:
        raise FileNotFoundError(f"No finished runs (folders with config.json, metrics.csv and "
                                f"summary.json) in {_display(str(results_dir.resolve()))}")
    summaries = split_experiments(pd.DataFrame([row for row, _ in loaded]))
    frames: dict[str, list] = {"metrics.csv": [], "clients.csv": [], "partition.csv": []}
    for (_, tables), row in zip(loaded, summaries.to_dict("records")):
        key = {k: row[k] for k in ("run_name", "label", "seed")}
        for name, frame in tables.items():
            frames[name].append(_keyed(frame, key))
    metrics = _concat(frames["metrics.csv"])
    # Derived axes for the figures, in the units the tables use.
    metrics["cumulative_uplink_mb"] = metrics["cumulative_uplink_bytes"] / BYTES_PER_MB
    metrics["cumulative_client_train_gflops"] = (metrics["cumulative_client_train_flops"]
                                                 / FLOPS_PER_GFLOP)
    summaries = _with_tail_flags(summaries, metrics)
    return RunTable(summaries.drop(columns="experiment"), metrics,
                    _concat(frames["clients.csv"]), _concat(frames["partition.csv"]))


def tail_includes_warmup(tail_rounds, evaluated_rounds) -> bool:
    """Does a run's tail accuracy average warm-up rounds? Yes when its tail (the last
    `tail_rounds` evaluated rounds, summary.json's count of those it used) covers more than half
    of the rounds it evaluated: the tail then reaches into the first half of the run, where the
    accuracy is still climbing, and with no more evaluated rounds than tail_rounds it averages
    every one, round 1 included. A run that does not record its tail_rounds is not flagged."""
    if tail_rounds is None or pd.isna(tail_rounds) or pd.isna(evaluated_rounds):
        return False
    return 2 * int(tail_rounds) > int(evaluated_rounds)


def _with_tail_flags(summaries: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """summaries with each run's evaluated rounds and its tail_includes_warmup flag."""
    evaluated = metrics.dropna(subset=["test_accuracy"]).groupby("run_name")["round"].count()
    summaries = summaries.copy()
    summaries["evaluated_rounds"] = summaries["run_name"].map(evaluated).fillna(0).astype(int)
    tails = summaries["tail_rounds"] if "tail_rounds" in summaries else [None] * len(summaries)
    summaries["tail_warmup"] = [tail_includes_warmup(t, n) for t, n in
                                zip(tails, summaries["evaluated_rounds"])]
    return summaries


def _name(folder: Path, results_dir: Path) -> str:
    """A run's name in the tables: its folder's path from results_dir ("batch/run")."""
    return folder.relative_to(results_dir).as_posix()


def _run_folders(root: Path, results_dir: Path, exclude: tuple[str, ...],
                 depth: int = 2) -> list[Path]:
    """Run folders in `root` and in folders below it, `depth` levels down at most (a batch's
    runs are one level down); a run folder's own subfolders are not searched."""
    found = []
    for p in sorted(root.iterdir()):
        try:
            if not p.is_dir() or p.is_symlink() or p.name in exclude:
                continue
            if (p / "config.json").is_file() and (p / "metrics.csv").is_file():
                if not _is_utf8(p.name):
                    warnings.warn(f"Skipping run {_display(p.name)} in "
                                  f"{_display(str(results_dir))}: its folder name is not UTF-8 "
                                  f"text, which the tables cannot hold (rename the folder)",
                                  stacklevel=3)
                    continue
                found.append(p)
            elif depth > 0:
                found += _run_folders(p, results_dir, exclude, depth - 1)
        except OSError:  # a folder this user cannot look into: not readable as a run
            continue
    return found


def _read_run(folder: Path, name: str) -> tuple[dict, dict[str, pd.DataFrame | None]]:
    """One run's summary row (summary.json numbers, key config fields, its experiment) and its
    CSV tables (None for one it did not write)."""
    config, summary = _read_json(folder / "config.json"), _read_json(folder / "summary.json")
    recorded = summary.get("config_sha256")
    if recorded is not None and recorded != _sha256(folder / "config.json"):
        raise _Unreadable("config.json was changed after the run (its sha256 is not the one "
                          "summary.json recorded), so its parameters may not be the run's")
    _check_types(summary, config)
    # The folder's path is the identifier on disk, so it wins over summary's run_name;
    # a run without a label is its own method.
    row = {"run_name": name,
           "label": summary.get("label") or config.get("label") or name,
           "seed": summary.get("seed", config.get("seed")),
           # a label the user wrote is shown as written in legends (label_aliases)
           "label_given": bool(config.get("label"))}
    row.update({k: v for k, v in summary.items()
                if k not in row and k not in ("artifacts", "config_sha256")})
    row.update({k: config[k] for k in CONFIG_FIELDS if k in config})
    row["experiment"] = json.dumps(experiment_params(config))  # in the config's field order
    tables = {}
    for name in ("metrics.csv", "clients.csv", "partition.csv"):
        path = folder / name
        try:
            tables[name] = pd.read_csv(path) if path.is_file() else None
        except (ValueError, UnicodeDecodeError, OSError) as err:
            raise _Unreadable(f"{name} cannot be read ({type(err).__name__}: {err})") from None
    metrics = tables["metrics.csv"]
    if metrics is None or "test_accuracy" not in metrics:
        raise _Unreadable("metrics.csv has no test_accuracy column")
    for column in METRIC_COLUMNS:
        if column not in metrics or not pd.api.types.is_numeric_dtype(metrics[column]):
            raise _Unreadable(f"metrics.csv's {column} column is "
                              f"{'missing' if column not in metrics else 'not numeric'}")
    return row, tables


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_types(summary: dict, config: dict) -> None:
    """The values the tables compute with have their types: a hand-edited
    `"tail_test_accuracy": "high"` makes the run damaged (skipped, named), not a traceback."""
    for name in SUMMARY_NUMBERS:
        if not _number(summary.get(name)):
            raise _Unreadable(f"summary.json's {name} is {summary[name]!r}; expected a number")
    seed = summary.get("seed", config.get("seed"))
    if not (isinstance(seed, int) and not isinstance(seed, bool)):
        raise _Unreadable(f"the seed is {seed!r}; expected an integer")
    for source, name in ((summary, "summary.json"), (config, "config.json")):
        label = source.get("label")
        if label is not None and not isinstance(label, str):
            raise _Unreadable(f"{name}'s label is {label!r}; expected text")


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, which Python keeps as surrogates
        return False
    return True


def _display(text: str) -> str:
    """A path that may hold undecodable bytes, printable (they show as \\xNN)."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise _Unreadable(f"{path.name} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise _Unreadable(f"{path.name} does not hold a JSON object")
    return data


def _keyed(df: pd.DataFrame | None, key: dict) -> pd.DataFrame | None:
    """A run's table with its key columns in front."""
    if df is None:
        return None
    df = df.copy()
    for i, (name, value) in enumerate(key.items()):
        df.insert(i, name, value)
    return df


def _concat(frames: list[pd.DataFrame | None]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def split_experiments(summaries: pd.DataFrame) -> pd.DataFrame:
    """Relabel runs so that each label is one experiment with distinct seeds (module doc).

    A label made here is checked against every label in use: a user's label that already reads
    like one ("FedAvg [rounds=2]") keeps its name, and the made one gets a number ("FedAvg
    [rounds=2] #2"), so two experiments never share a row.
    """
    summaries = summaries.copy()
    taken = set(summaries["label"])

    def unique(label: str) -> str:
        new, n = label, 1
        while new in taken:
            n += 1
            new = f"{label} #{n}"
        if new != label:
            warnings.warn(f"Label {label!r} is already the label of other runs: these runs are "
                          f"shown as {new!r}", stacklevel=4)
        taken.add(new)
        return new

    for label, group in summaries.groupby("label", sort=False):
        experiments = list(dict.fromkeys(group["experiment"]))
        if len(experiments) < 2:
            continue
        params = [json.loads(e) for e in experiments]
        differ = [name for name in params[0] if name != "label"
                  and len({json.dumps(p.get(name)) for p in params}) > 1]
        warnings.warn(f"Runs labelled {label!r} differ in {', '.join(differ)}: they are "
                      f"different experiments, kept apart as rows labelled with those values",
                      stacklevel=3)
        for experiment, p in zip(experiments, params):
            suffix = ", ".join(f"{name}={_shown(p.get(name))}" for name in differ)
            summaries.loc[group.index[group["experiment"] == experiment], "label"] = \
                unique(f"{label} [{suffix}]")
    for label, group in summaries.groupby("label", sort=False):
        repeats = group[group["seed"].duplicated(keep="first")]
        if repeats.empty:
            continue
        warnings.warn(f"Runs labelled {label!r} repeat seed(s) "
                      f"{', '.join(map(str, sorted(set(repeats['seed']))))}: a repeat is not "
                      f"another sample, so {', '.join(repeats['run_name'])} are rows of their "
                      f"own", stacklevel=3)
        for index, run_name in repeats["run_name"].items():
            summaries.loc[index, "label"] = unique(f"{label} [run {run_name}]")
    return summaries


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def label_order(summaries: pd.DataFrame) -> list[str]:
    """Labels in order of first appearance, the FedAvg baseline first."""
    labels = list(dict.fromkeys(summaries["label"]))
    return sorted(labels, key=lambda label: label != BASELINE_LABEL)


# ---------------------------------------------------------------- short labels for legends

# Legends hold a short form of each label; the tables keep the full one. Words of the automatic
# labels (config.method_label) and the parameter names split_experiments puts in a suffix,
# each abbreviated where a reader still knows it at a glance.
_WORDS = {"structured": "struct", "unstructured": "unstruct", "cost_weighted": "cw",
          "adaptive": "adapt", "random": "rand", "masked-CE": "mCE"}
_PARAMS = {"rounds": "R", "num_clients": "N", "clients_per_round": "K", "local_epochs": "E",
           "batch_size": "B", "data_fraction": "data", "learning_rate": "lr",
           "test_samples": "test", "pruning_ratio": "p", "sparsity_ratio": "s",
           "classes_per_client": "C", "dirichlet_alpha": "alpha", "partition": "",
           "dataset": "", "model": "", "eval_every": "eval/", "tail_rounds": "tail"}
ALIAS_WIDTH = 42  # characters a legend line holds; a longer short label wraps onto two


def short_label(label: str, given: bool = False, width: int = ALIAS_WIDTH) -> str:
    """A legend's form of `label`: an automatic label's words and its "[name=value, ...]"
    suffix abbreviated (`Hybrid(structured 0.4 adaptive + cost_weighted 0.95) [rounds=20,
    num_clients=20]` -> `Hybrid(struct 0.4 adapt + cw 0.95) [R20 N20]`), a label the user
    gave (`given`) kept as written, a "[run batch/name]" suffix down to the run's own name;
    wrapped onto at most two lines of `width` characters, the rest cut with an ellipsis."""
    import re
    import textwrap

    number = re.search(r" #(\d+)$", label)
    base, _, suffix = label[:number.start() if number else None].partition(" [")
    suffix = suffix[:-1] if suffix.endswith("]") else suffix
    if not given:
        for word, short in _WORDS.items():
            base = re.sub(rf"(?<![\w-]){re.escape(word)}(?![\w-])", short, base)
    if suffix.startswith("run "):
        suffix = "run " + suffix[4:].rsplit("/", 1)[-1]
    elif suffix:
        parts = []
        for item in suffix.split(", "):
            name, eq, value = item.partition("=")
            parts.append(f"{_PARAMS.get(name, name)}{'' if name in _PARAMS else '='}{value}"
                         if eq else item)
        suffix = " ".join(parts)
    text = base + (f" [{suffix}]" if suffix else "") + (f" #{number[1]}" if number else "")
    lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False)
    if len(lines) > 2:
        lines = [lines[0], lines[1][:width - 1].rstrip() + "…"]
    return "\n".join(lines)


def label_aliases(summaries: pd.DataFrame) -> dict[str, str]:
    """{label: its short form for legends}, each distinct ("#2" added where two would
    read the same). A label set by the user (config's `label`) is kept as written (wrapped)."""
    given = (summaries.groupby("label")["label_given"].any().to_dict()
             if "label_given" in summaries else {})
    aliases, seen = {}, set()
    for label in label_order(summaries):
        alias = short_label(label, bool(given.get(label, False)))
        candidate, n = alias, 1
        while candidate in seen:
            n += 1
            candidate = f"{alias} #{n}"
        seen.add(candidate)
        aliases[label] = candidate
    return aliases
