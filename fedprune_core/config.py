"""ExperimentConfig: every parameter of an experiment, its default and its validation.

This dataclass is the single source of truth. The command line (`python -m fedprune_core run`),
YAML parameter files, the experiment notebook's `parameters` cell and `config.json` are all
generated from or checked against it, so no second list of defaults exists anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import yaml

from . import checks, params_files
from .checks import choices
from .data.catalog import DATASETS
from .errors import ConfigError
from .methods.registry import method_class, names as method_names
from .models.zoo import MODELS

MODEL_NAMES = tuple(MODELS)


def _p(default, help: str, choices: Union[tuple, Callable[[], tuple]] = (),
       runtime: bool = False, shorthand: bool = False):
    """A config field with its help text. `choices`: the allowed values (or a function giving
    them: the registered methods); `runtime` fields steer a run but not its numbers;
    `shorthand` fields only set other fields (`method`), which then decide the run."""
    return field(default=default, metadata={"help": help, "choices": choices, "runtime": runtime,
                                            "shorthand": shorthand})


def _methods() -> tuple[str, ...]:
    return ("",) + method_names("method")


@dataclass(frozen=True)
class ExperimentConfig:
    # --- method -----------------------------------------------------------------------------
    method: str = _p(
        "", "A method by name (methods/presets: e.g. fedavg, hybrid, heterofl, fjord, fedrolex, "
            "federated_dropout, sparsify): sets the fields that make it that method; its knobs "
            "stay yours to set. Empty = the fields as written (the defaults: the seed's hybrid).",
        _methods, shorthand=True)
    # --- federation -------------------------------------------------------------------------
    rounds: int = _p(20, "Number of federated rounds.")
    num_clients: int = _p(20, "Total simulated clients.")
    clients_per_round: int = _p(10, "Clients selected each round.")
    local_epochs: int = _p(2, "Local epochs per selected client.")
    lr: float = _p(0.01, "Client learning rate (SGD).")
    momentum: float = _p(0.0, "Client SGD momentum (0 = plain SGD, as in the seed).")
    batch_size: int = _p(64, "Client mini-batch size.")
    lr_milestones: str = _p(
        "", "Client lr schedule: rounds, comma-separated and increasing (e.g. \"300,500\"), after "
            "each of which lr is multiplied by lr_gamma (MultiStepLR stepped once a round, as "
            "HeteroFL); empty = a constant lr.")
    lr_gamma: float = _p(0.1, "Factor lr is multiplied by at each of lr_milestones.")
    weight_decay: float = _p(0.0, "Client SGD weight decay (L2, as torch.optim.SGD adds it).")
    grad_clip_norm: float = _p(
        0.0, "Clip each local step's gradient to this L2 norm over the whole model (HeteroFL "
             "clips at 1); 0 = off.")
    # --- data -------------------------------------------------------------------------------
    dataset: str = _p("mnist", "Dataset (torchvision).", tuple(DATASETS))
    data_root: Optional[str] = _p(
        None, "Dataset folder; default: $FEDPRUNE_DATA_ROOT, else ./data.", runtime=True)
    data_fraction: float = _p(
        1.0, "Fraction of the training set used (stratified, seeded); <1 for quick runs.")
    partition: str = _p("shards", "How training data is split over clients: label shards, "
                        "Dirichlet label proportions, IID, or natural (one client a writer, "
                        "for datasets that record writers: femnist; with fewer clients than "
                        "writers a seeded sample of writers, tested on their own held-out "
                        "samples; data_fraction thins every writer's samples first).",
                        ("shards", "dirichlet", "iid", "natural"))
    classes_per_client: int = _p(2, "Label shards per client (partition=shards).")
    dirichlet_alpha: float = _p(0.5, "Dirichlet concentration (partition=dirichlet); small = skewed.")
    # --- pruning ----------------------------------------------------------------------------
    model: str = _p("simple_cnn", "Network (a layer table in models/zoo.py): the seed's SimpleCNN, "
                    "McMahan et al. 2017's MNIST CNN, a VGG-style CNN for 32x32x3 inputs, LEAF's "
                    "FEMNIST CNN, HeteroFL's MNIST CNN, HeteroFL's pre-activation ResNet-18 or "
                    "FjORD's CIFAR ResNet-18.", MODEL_NAMES)
    model_width: float = _p(
        1.0, "HeteroFL's models and FjORD's ResNet (heterofl_conv, preresnet18, resnet18): "
             "hidden sizes ceil(model_width x 64, 128, 256, 512), HeteroFL's model rate (e = "
             "0.0625); 1 for the other models.")
    model_norm: str = _p(
        "auto", "Normalisation after each convolution: none, static batch norm (HeteroFL's "
                "sBN: batch statistics while training, a pass over training data before "
                "evaluating) or group norm (4 groups); auto = the model's own (none for the "
                "seed's and McMahan's CNNs, bn for HeteroFL's models and the ResNets). The "
                "ResNets take bn or gn, vgg_cifar none.", ("auto", "none", "bn", "gn"))
    norm_stats_samples: int = _p(
        0, "Static batch norm: training samples (a seeded sample of the clients' data) whose "
           "statistics every evaluation uses; 0 = all of the clients' data (HeteroFL's pass).")
    pruning_mode: str = _p("structured", "Client pruning: none, structured sub-models "
                           "(structured_selection picks the units) or unstructured magnitude "
                           "masks.", ("none", "structured", "unstructured"))
    pruning_ratio: float = _p(0.4, "Base pruning ratio (fraction of weights/filters removed).")
    adaptive_ratio: bool = _p(True, "Per-client ratios from capability profiles (warm start).")
    adaptive_ratio_online: bool = _p(
        False, "Move each client's ratio every round toward meeting the round deadline.")
    min_pruning_ratio: float = _p(0.1, "Lowest adaptive pruning ratio.")
    max_pruning_ratio: float = _p(0.8, "Highest adaptive pruning ratio.")
    ratio_step: float = _p(0.05, "Online controller's step per round.")
    participation: str = _p(
        "all", "Who of the sampled clients trains: all, or only those whose full-model round "
               "fits the round deadline (capable: selective participation, the others sit the "
               "round out; pruning_mode none).", ("all", "capable"))
    structured_selection: str = _p(
        "l1", "Which filters/neurons a structured client keeps: largest L1 norm, the first ones "
        "(HeteroFL's and FjORD's nested sub-models), a window rolling with the round "
        "(FedRolex), or a random set a client a round (Federated Dropout).",
        ("l1", "first", "rolex", "random"))
    rolex_step: int = _p(
        1, "FedRolex: units the window rolls a round (1 = the paper); a larger step covers a "
           "layer within a short run.")
    local_training: str = _p(
        "sgd", "How a client trains its sub-model: plain SGD, HeteroFL's scaler (each pruned "
        "layer's output divided by its kept fraction while training), or FjORD's ordered "
        "dropout (a nested width drawn each step up to the client's own; "
        "structured_selection first).", ("sgd", "scaler", "fjord"))
    masked_ce: bool = _p(
        False, "HeteroFL's masked cross-entropy (structured): a client's loss over its own "
               "classes only, and each class's outputs averaged over the clients that have it.")
    fjord_levels: int = _p(5, "FjORD: width levels 1/L, 2/L, ..., 1 a step draws from.")
    fjord_distill: bool = _p(
        False, "FjORD: each step also trains the client's whole sub-model and teaches the drawn "
               "width its predictions (self-distillation).")
    pruning_levels: str = _p(
        "", "Structured: the pruning ratios (fractions of every group's units removed) clients "
            "are spread over, comma-separated (HeteroFL's a-e: 0,0.5,0.75,0.875,0.9375; "
            "FjORD's tiers: 0.8,0.6,0.4,0.2,0), instead of pruning_ratio and adaptive ratios; "
            "empty = unused.")
    level_assignment: str = _p(
        "fixed", "pruning_levels: fixed = client i keeps level floor(i x levels / num_clients) "
                 "all run (FjORD's tiers, HeteroFL's fix); dynamic = a client moves to the next "
                 "level after each round it trains (HeteroFL's dynamic: each round's clients "
                 "spread over the levels; methods/ratio/levels.py).", ("fixed", "dynamic"))
    width_multiple: int = _p(
        1, "Structured: round every kept width to a multiple of N (at least N, at most the "
           "layer): 8 or 16 gives sub-models oneDNN trains faster per FLOP (default runs "
           "1.1-1.2x faster on AVX2 and AVX-512 CPUs); it moves the pruning ratios, so 1 "
           "(exact widths) is the default.")
    unstructured_contribution: str = _p(
        "kept", "Unstructured: aggregate only kept coordinates ('kept'), or also send the pruned "
        "ones as -w like the seed's original ('all').", ("kept", "all"))
    # --- sparsification ---------------------------------------------------------------------
    sparsify_method: str = _p(
        "cost_weighted", "Update compression: none (dense float32), top-k, random-k, "
        "cost-weighted top-k, STC sparse ternary, or QSGD quantisation (dense).",
        ("none", "topk", "random", "cost_weighted", "stc", "qsgd"))
    sparsity_ratio: float = _p(0.95, "Fraction of update coordinates NOT sent.")
    error_feedback: bool = _p(True, "Keep what the server does not receive as a residual on the "
                                    "client (--no_error_feedback); unused without compression.")
    sparsify_scope: str = _p(
        "auto", "k per tensor or over the whole model (topk, random, stc); auto = model for "
        "cost_weighted (costs only matter across tensors), per tensor otherwise.",
        ("auto", "per_tensor", "model"))
    conv_cost: float = _p(1.0, "Cost weight of a convolution coordinate (cost_weighted).")
    fc_cost: float = _p(2.0, "Cost weight of a fully connected coordinate (cost_weighted).")
    qsgd_levels: int = _p(16, "QSGD quantisation levels s (sign + ceil(log2(s+1)) bits a "
                              "coordinate).")
    qsgd_bucket: int = _p(512, "QSGD: coordinates sharing one norm (the paper's 512); 0 = one "
                               "norm a tensor (far noisier on large layers).")
    # --- server -----------------------------------------------------------------------------
    aggregation: str = _p("fedavg", "Server aggregation: masked FedAvg, or FedAvg with server "
                                    "momentum (FedAvgM).", ("fedavg", "fedavgm"))
    aggregation_weights: str = _p("samples", "FedAvg client weights.", ("samples", "uniform"))
    server_lr: float = _p(1.0, "Server learning rate applied to the averaged update.")
    server_momentum: float = _p(0.9, "FedAvgM's server momentum (aggregation=fedavgm).")
    momentum_untrained: str = _p(
        "hold", "FedAvgM: a coordinate no client trained this round keeps its momentum and "
                "does not move ('hold'), or keeps moving on its old momentum ('drift', FedAvgM "
                "as written for full participation).", ("hold", "drift"))
    eval_every: int = _p(1, "Evaluate every N rounds (and always at the last round).")
    tail_rounds: int = _p(5, "Headline accuracy: tail_test_accuracy is the mean test accuracy "
                             "of the last tail_rounds evaluated rounds (non-IID rounds swing).")
    target_accuracy: Optional[float] = _p(
        None, "Stop the run at the first evaluated round whose test accuracy (%) reaches this "
              "(rounds is then the limit); summary.json records the round. null = run every "
              "round.")
    test_samples: int = _p(
        0, "Test images (a stratified, seeded subset) for every evaluation, the headline and "
           "each width's; 0 = the whole test set. Fewer make quick runs quicker.")
    width_test_samples: int = _p(
        2000, "Test images (a stratified, seeded subset of the headline's) on which each "
              "deployed width, the full width included, is evaluated: a fifth of the cost of "
              "the whole set for diagnostics; 0 = the headline's test set.")
    width_eval: str = _p(
        "tail", "Structured runs: the global model's accuracy at each width clients train "
        "(binned, at most 8) beside the full width: at the evaluations the tail accuracy "
        "averages (the last tail_rounds), at every evaluation, or off.",
        ("tail", "every", "off"))
    eval_batch_size: int = _p(
        128, "Evaluation batch size; <=256 keeps each activation under glibc's 32 MB mmap "
             "threshold (larger batches page-fault every activation: 2x slower).")
    # --- systems model ----------------------------------------------------------------------
    compute_gflops: float = _p(5.0, "Median simulated client compute (GFLOP/s).")
    uplink_mbps: float = _p(10.0, "Median simulated client uplink (Mbit/s).")
    downlink_mbps: float = _p(50.0, "Median simulated client downlink (Mbit/s).")
    capability_spread: float = _p(
        0.5, "Log-normal sigma of client compute and bandwidth (0 = identical clients).")
    round_deadline_sec: Optional[float] = _p(
        None, "Simulated round deadline for the online controller; default: the median "
              "client's time at the base pruning ratio.")
    # --- run --------------------------------------------------------------------------------
    seed: int = _p(0, "Seed for partition, sampling, initialisation and every random choice.")
    device: str = _p("cpu", "Device: cpu, cuda or cuda:N.")
    engine: str = _p(
        "parallel", "Local training engine: parallel trains num_threads clients side by side, "
        "one torch thread each (the fastest on a CPU, and the same numbers whatever the number "
        "of cores or the load); sequential trains the clients one after another on num_threads "
        "intra-op threads (the same numbers as parallel with num_threads 1; other thread counts "
        "change them slightly); cohort trains them all in one batched computation (vmap; for "
        "GPUs, slower on a CPU; agrees to float tolerance, not bit for bit).",
        ("parallel", "sequential", "cohort"))
    label: Optional[str] = _p(None, "Method label for tables and figures; default: derived.")
    results_dir: str = _p("./results", "Folder holding one sub-folder per run.", runtime=True)
    run_name: Optional[str] = _p(None, "Run sub-folder name; default: a timestamp.", runtime=True)
    overwrite: bool = _p(False, "Replace a finished or interrupted run of the same name.",
                         runtime=True)
    resume: bool = _p(False, "Continue an interrupted run from its checkpoint (a fresh start "
                             "when there is none).", runtime=True)
    progress: str = _p("auto", "Progress display: auto (a bar; a widget in Jupyter), text "
                               "(round lines only: papermill, batches), or off.",
                       ("auto", "text", "off"), runtime=True)
    num_threads: int = _p(
        0, "Threads (0 = every core this process may use): the parallel engine's client workers "
           "and evaluation's, one torch thread each (numbers independent of it); the sequential "
           "and cohort engines' torch intra-op threads.", runtime=True)

    def __post_init__(self):
        if self.method in _methods() and self.method:
            for name, value in method_class("method", self.method).sets.items():
                object.__setattr__(self, name, value)  # conflicts: refused by from_dict
        # "~" is the home folder wherever a path comes from (a params file, --set, the notebook),
        # as in a shell: not a folder named "~" in the working directory.
        for name in ("results_dir", "data_root"):
            value = getattr(self, name)
            if isinstance(value, str) and value.startswith("~"):
                object.__setattr__(self, name, os.path.expanduser(value))
        checks.validate(self)

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def field_specs(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
        if not isinstance(values, Mapping):
            raise ConfigError(f"parameters: expected a mapping of parameter: value, got "
                              f"{_shown(values)}")
        check_names(values)
        kwargs = {k: coerce_value(k, v) for k, v in values.items() if not str(k).startswith("_")}
        refuse_method_conflicts(kwargs)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, *paths: str | Path, overrides: dict | None = None) -> "ExperimentConfig":
        merged: dict[str, Any] = {}
        for path in paths:
            merged.update(params_files.load_params_file(path, check_names))
        merged.update(overrides or {})
        return cls.from_dict(merged)

    def replace(self, **changes) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, **extra) -> str:
        return json.dumps({**self.to_dict(), **extra}, indent=2, sort_keys=False)

    def science_dict(self) -> dict[str, Any]:
        """The fields that decide the numbers (runtime steering and the `method` shorthand,
        whose fields are here, left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not (f.metadata["runtime"] or f.metadata["shorthand"])}

    # --- derived ----------------------------------------------------------------------------
    @property
    def pruning(self) -> bool:
        return self.pruning_mode != "none"

    @property
    def compression(self) -> bool:
        return self.sparsify_method != "none"

    @property
    def method_label(self) -> str:
        """A readable method name for logs, tables and figure legends."""
        if self.label:
            return self.label
        prune = f"{self.pruning_mode} {self.pruning_ratio:g}"
        if self.pruning_mode == "structured" and self.structured_selection != "l1":
            selection = {"random": "dropout", "rolex": "rolex" + (
                f"/{self.rolex_step}" if self.rolex_step > 1 else "")}.get(
                self.structured_selection, self.structured_selection)
            prune = f"{selection} {self.pruning_ratio:g}"
        if self.pruning_mode == "structured" and self.width_multiple > 1:
            prune += f" x{self.width_multiple}"
        if self.adaptive_ratio or self.adaptive_ratio_online:
            prune += " adaptive"
        if self.local_training == "scaler":
            prune += " scaler"
        elif self.local_training == "fjord":
            prune += (" FjORD" + (f" L={self.fjord_levels}" if self.fjord_levels != 5 else "")
                      + (" KD" if self.fjord_distill else ""))
        if self.masked_ce:
            prune += " masked-CE"
        sparse = (f"qsgd s={self.qsgd_levels} b={self.qsgd_bucket or 'tensor'}"
                  if self.sparsify_method == "qsgd"
                  else f"{self.sparsify_method} {self.sparsity_ratio:g}")
        if not self.error_feedback and self.compression:
            sparse += " no-EF"
        server = "FedAvgM" if self.aggregation == "fedavgm" else "FedAvg"
        if self.pruning and self.compression:
            name = f"Hybrid({prune} + {sparse})"
        elif self.pruning:
            name = f"Prune({prune})"
        elif self.compression:
            name = f"Sparsify({sparse})" if self.sparsify_method != "qsgd" else f"QSGD({sparse})"
        else:
            return server
        return name if server == "FedAvg" else f"{server} {name}"


# Parameters that were replaced, with what replaces them (old params files get a clear error).
REPLACED = {"pruning": "pruning_mode: none (no pruning), structured or unstructured",
            "sparsification": "sparsify_method: none (dense updates) or a compression method",
            "diagnostic_test_samples": "test_samples: the one test set of the headline and of "
                                       "every width's accuracy (0 = all of it)",
            "width_levels": "pruning_levels: the levels as fractions removed, 1 - each kept "
                            "fraction (1,0.5,0.25 is 0,0.5,0.75), as pruning_ratio counts them"}


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(ExperimentConfig)]


def closest(name: str, allowed) -> Optional[str]:
    """The allowed name a typo most likely meant (difflib), or None."""
    match = difflib.get_close_matches(str(name), list(allowed), n=1, cutoff=0.6)
    return match[0] if match else None


def check_names(values: Mapping, where: str = "") -> None:
    """Every key a parameter: a replaced one names its replacement, an unknown one the closest
    parameter (the full list only when nothing is close). Keys starting with "_" are free."""
    for name in values:
        if name in REPLACED:
            raise ConfigError(f"{where}{name}: this parameter was replaced; use "
                              f"{REPLACED[name]}")
    known = field_names()
    unknown = sorted(str(k) for k in values if k not in known and not str(k).startswith("_"))
    if not unknown:
        return
    guesses = {k: closest(k, known) for k in unknown}
    named = ", ".join(k if k.isprintable() else repr(k) for k in unknown)  # one line
    if all(guesses.values()):
        hint = "; ".join(f"did you mean {g}?" for g in guesses.values())
        raise ConfigError(f"{where}unknown parameter(s) {named}; {hint}")
    raise ConfigError(f"{where}unknown parameter(s) {named}; allowed: "
                      f"{', '.join(sorted(known))}")


def refuse_method_conflicts(values: Mapping[str, Any]) -> None:
    """`method: X` sets X's fields: a given field that says otherwise is an error, not silently
    overridden (what the method leaves alone, its knobs, stays the user's)."""
    method = values.get("method") or ""
    if method not in _methods() or not method:
        return  # validation names the allowed methods
    for name, value in method_class("method", method).sets.items():
        if name in values and values[name] != value:
            raise ConfigError(f"{name}: {values[name]!r} is not allowed with method {method}, "
                              f"which sets {name}={value!r}; allowed: {value!r} or leave it out")


def value_from_text(name: str, text: str) -> Any:
    """A value written as YAML (`--set key=value`), coerced to the parameter's type."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{name}: {text!r} is not a valid YAML value ({problem})") from None
    return coerce_value(name, value)


def parameters_markdown() -> str:
    """The README's parameter table, generated so the docs cannot drift from the config."""
    rows = ["| Parameter (flag `--name`) | Default | Description |", "|---|---|---|"]
    for f in dataclasses.fields(ExperimentConfig):
        help_text = f.metadata["help"]
        if choices(f):
            help_text += f" One of: {', '.join(f'`{c}`' for c in choices(f) if c)}."
        default = "null" if f.default is None else str(f.default).lower() if isinstance(
            f.default, bool) else f.default
        rows.append(f"| `{f.name}` | `{default}` | {help_text.replace('|', '/')} |")
    return "\n".join(rows)


# An int beyond 64 bits passes every range check, then overflows torch or numpy mid-run.
INT_LIMIT = 2 ** 63


def coerce_value(name: str, value: Any) -> Any:
    """YAML and JSON give ints for floats (1 vs 1.0), and PyYAML reads `1e-3` as a string.

    A boolean must be a real boolean: the quoted string "yes" (or "false") is not taken as one,
    since `"no"` silently meaning True or False is a trap. Only the Optional fields take null
    (elsewhere None would pass as a value and fail mid-run), a number must be finite, and an int
    must fit in 64 bits.
    """
    spec = {f.name: f for f in dataclasses.fields(ExperimentConfig)}[name]
    kind = spec.type.replace("Optional[", "").rstrip("]")
    expected = "true or false (unquoted)" if kind == "bool" else kind
    if value is None:
        if spec.type.startswith("Optional["):
            return None
        raise ConfigError(f"{name}: expected {expected}, got null (only "
                          f"{', '.join(_optional_fields())} take null)")
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            number = int(value)
            if not -INT_LIMIT <= number < INT_LIMIT:
                raise ConfigError(f"{name}: expected a 64-bit int, got {_shown(value)}; allowed: "
                                  f"-2**63 to 2**63-1 (and the parameter's own range)")
            return number
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(f"{name}: expected a finite float, got {_shown(value)}")
            return number
        if kind == "str":
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise TypeError
            return str(value)
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        return value
    raise ConfigError(f"{name}: expected {expected}, got {_shown(value)}")


def _shown(value: Any) -> str:
    """A value in an error message, bounded: a YAML list of a million items (or an alias bomb,
    whose full repr would never end) is shown by its start."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlevel = 60, 60, 3
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    return short.repr(value)


def _optional_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ExperimentConfig) if f.type.startswith("Optional[")]


def experiment_params(source: "ExperimentConfig | Mapping[str, Any]") -> dict[str, Any]:
    """What makes two runs the same experiment: every parameter that decides the numbers (the
    fields not marked `runtime`; `method` only sets others), except `seed`, whose values are the
    experiment's repetitions.

    The one definition used by the analysis (which runs are pooled as seeds of one row), resume
    and the batch runner (is the run in this folder this run). `source` is a config, or a dict
    read from a run folder (config.json, possibly written by an older version): a field it lacks
    counts at its default, so a new field does not split old runs from new ones. The label is
    the resolved method label (config.json stores it so).
    """
    if isinstance(source, ExperimentConfig):
        values = {f.name: getattr(source, f.name) for f in dataclasses.fields(source)}
        values["label"] = source.method_label
    else:
        values = dict(source)
        if values.get("label") is None:
            values["label"] = _derived_label(values)
    params = {f.name: values.get(f.name, f.default) for f in dataclasses.fields(ExperimentConfig)
              if not (f.metadata["runtime"] or f.metadata["shorthand"]) and f.name != "seed"}
    # JSON's view of a value: 1 == 1.0 already; a tuple and the list it is saved as must agree.
    return json.loads(json.dumps(params, default=str))


def experiment_differences(saved: "ExperimentConfig | Mapping[str, Any]",
                           ours: "ExperimentConfig | Mapping[str, Any]",
                           with_seed: bool = True) -> list[str]:
    """`name=saved (now ours)` for each parameter where two runs differ (with `with_seed`: as
    runs, the seed too); empty when they are the same experiment (and seed)."""
    def params(source):
        seed = source.seed if isinstance(source, ExperimentConfig) else source.get("seed", 0)
        return {**experiment_params(source), **({"seed": seed} if with_seed else {})}
    a, b = params(saved), params(ours)
    return [f"{k}={a.get(k)!r} (now {v!r})" for k, v in b.items() if a.get(k) != v]


def _derived_label(values: Mapping[str, Any]) -> Optional[str]:
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    try:
        return ExperimentConfig.from_dict({k: v for k, v in values.items()
                                           if k in names}).method_label
    except ConfigError:
        return None


