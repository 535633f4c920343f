"""Validation of an ExperimentConfig: every invalid value or combination is a ConfigError naming
the parameter and what is allowed, raised before any data is loaded."""

from __future__ import annotations

import dataclasses
import math
import os
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from .data.catalog import DATASETS
from .errors import ConfigError
from .methods.registry import method_class, names
from .models.zoo import MODELS, NORMS, SCALABLE, spec_for

if TYPE_CHECKING:  # the configuration calls `validate`; annotations only
    from .config import ExperimentConfig


def choices(f: dataclasses.Field) -> tuple:
    """A config field's allowed values (empty: any value of its type); a function in the
    field's metadata gives them when they are the registered methods."""
    allowed = f.metadata["choices"]
    return tuple(allowed()) if callable(allowed) else tuple(allowed)


def validate(cfg: ExperimentConfig) -> None:
    """Raise ConfigError for the first invalid value, before any data is loaded."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        allowed = choices(f)
        if allowed and value not in allowed:
            shown = ", ".join(repr(c) if c == "" else c for c in allowed)
            raise ConfigError(f"{f.name}: {value!r} is not allowed; allowed: {shown}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}: must be a finite number, got {value}")

    def need(ok: bool, name: str, allowed: str):
        if not ok:
            raise ConfigError(f"{name}: {getattr(cfg, name)!r} is not allowed; allowed: {allowed}")

    _check_ranges(cfg, need)
    _check_combinations(cfg, need)
    for name in names("method"):  # each method's own requirements (methods/presets)
        method_class("method", name).check(cfg, need)
    if cfg.run_name is not None:
        check_folder_name(cfg.run_name, "run_name")
    need(cfg.results_dir != "" and "\0" not in cfg.results_dir, "results_dir", "a folder path")
    _check_enough_samples(cfg)


# A fixed bound, not one from this machine's cores: a grid validated on a login node must stay
# valid on its compute nodes. Far above any core count; 10**9 threads would hang the run.
MAX_THREADS = 4096


def _check_ranges(cfg: ExperimentConfig, need) -> None:
    """Each number on its own."""
    for name in ("rounds", "num_clients", "clients_per_round", "local_epochs", "batch_size",
                 "eval_every", "eval_batch_size", "tail_rounds", "qsgd_levels", "width_multiple",
                 "rolex_step", "fjord_levels"):
        need(getattr(cfg, name) >= 1, name, "an integer >= 1")
    for name in ("pruning_ratio", "sparsity_ratio", "min_pruning_ratio", "max_pruning_ratio",
                 "momentum", "server_momentum"):
        need(0.0 <= getattr(cfg, name) < 1.0, name, "a number in [0, 1)")
    for name in ("lr", "server_lr", "dirichlet_alpha", "conv_cost", "fc_cost", "compute_gflops",
                 "uplink_mbps", "downlink_mbps"):
        need(getattr(cfg, name) > 0, name, "a number > 0")
    need(0.0 < cfg.ratio_step < 1.0, "ratio_step", "a number in (0, 1)")
    need(0.0 < cfg.data_fraction <= 1.0, "data_fraction", "a number in (0, 1]")
    need(cfg.qsgd_bucket >= 0, "qsgd_bucket", "an integer >= 0 (0 = one norm a tensor)")
    need(cfg.test_samples >= 0, "test_samples", "an integer >= 0 (0 = the whole test set)")
    need(cfg.width_test_samples >= 0, "width_test_samples",
         "an integer >= 0 (0 = the headline's test set)")
    need(cfg.capability_spread >= 0, "capability_spread", "a number >= 0")
    need(cfg.round_deadline_sec is None or cfg.round_deadline_sec > 0, "round_deadline_sec",
         "a number > 0, or null for the automatic deadline")
    need(cfg.target_accuracy is None or 0.0 < cfg.target_accuracy <= 100.0, "target_accuracy",
         "a test accuracy in percent in (0, 100], or null to run every round")
    need(0 <= cfg.num_threads <= MAX_THREADS, "num_threads",
         f"an integer from 0 (all cores) to {MAX_THREADS}")
    need(cfg.seed >= 0, "seed", "an integer >= 0")
    need(cfg.lr_gamma > 0, "lr_gamma", "a number > 0")
    for name in ("weight_decay", "grad_clip_norm"):
        need(getattr(cfg, name) >= 0, name, "a number >= 0 (0 = off)")
    need(cfg.model_width > 0, "model_width", "a number > 0")
    need(cfg.norm_stats_samples >= 0, "norm_stats_samples",
         "an integer >= 0 (0 = all of the clients' training data)")
    parse_milestones(cfg.lr_milestones)
    parse_levels(cfg.pruning_levels)
    # not a number, but a value on its own: it heads table rows, legends and log lines
    need(cfg.label is None or not any(_unprintable(c) for c in cfg.label), "label",
         "text without control characters or line breaks")
    need(cfg.device == "cpu" or cfg.device == "cuda" or cfg.device.startswith("cuda:"),
         "device", "cpu, cuda or cuda:N")


def _check_combinations(cfg: ExperimentConfig, need) -> None:
    """Numbers and methods that must agree with each other, and with the dataset."""
    need(cfg.clients_per_round <= cfg.num_clients, "clients_per_round",
         f"1..num_clients ({cfg.num_clients})")
    need(cfg.width_multiple == 1 or cfg.pruning_mode == "structured", "width_multiple",
         "1 unless pruning_mode is structured (it rounds structured sub-models' widths)")
    structured = cfg.pruning_mode == "structured"
    need(cfg.model in SCALABLE or cfg.model_width == 1.0, "model_width",
         f"1 for {cfg.model} (a width factor is for {', '.join(SCALABLE)})")
    need(cfg.model_norm in ("auto", *NORMS[cfg.model]), "model_norm",
         f"auto or {', '.join(NORMS[cfg.model])} for {cfg.model}")
    if cfg.pruning_levels:
        need(structured, "pruning_levels",
             "empty unless pruning_mode is structured (levels are sub-model widths)")
        need(not cfg.adaptive_ratio and not cfg.adaptive_ratio_online, "pruning_levels",
             "empty when adaptive_ratio or adaptive_ratio_online is on (levels replace the "
             "adaptive ratios: set both false)")
    need(cfg.min_pruning_ratio <= cfg.max_pruning_ratio, "min_pruning_ratio",
         f"a number <= max_pruning_ratio ({cfg.max_pruning_ratio})")
    if cfg.pruning_mode != "none" and (cfg.adaptive_ratio or cfg.adaptive_ratio_online):
        need(cfg.min_pruning_ratio <= cfg.pruning_ratio <= cfg.max_pruning_ratio, "pruning_ratio",
             f"a number in [min_pruning_ratio, max_pruning_ratio] = "
             f"[{cfg.min_pruning_ratio}, {cfg.max_pruning_ratio}] when ratios are adaptive")
    need(not (cfg.pruning_mode == "unstructured" and cfg.unstructured_contribution == "all"
              and cfg.error_feedback and cfg.compression), "unstructured_contribution",
         "kept when error feedback compresses updates: with 'all' every pruned weight sends -w, "
         "which the residual would pile up round after round and which would take the k "
         "budget; use error_feedback false (or sparsify_method none) to study 'all'")
    need(not (cfg.sparsify_method == "cost_weighted" and cfg.sparsify_scope == "per_tensor"),
         "sparsify_scope", "auto or model for cost_weighted (within one tensor every coordinate "
         "costs the same, so cost weighting would equal topk)")
    info = DATASETS[cfg.dataset]
    if cfg.partition == "natural":
        with_writers = [name for name, i in DATASETS.items() if i.writers]
        need(info.writers > 0, "partition",
             f"natural only on a dataset that records its writers ({', '.join(with_writers)}); "
             f"on {cfg.dataset}: shards, dirichlet, iid")
        need(cfg.num_clients <= info.writers, "num_clients",
             f"at most {info.writers} with partition natural (one client a writer; "
             f"{cfg.dataset} has {info.writers} writers, a LEAF sample fewer, checked when the "
             f"files are read)")
    num_classes = info.num_classes
    need(1 <= cfg.classes_per_client <= num_classes, "classes_per_client",
         f"1..{num_classes} (the classes of {cfg.dataset})")
    try:
        spec_for(cfg)
    except ValueError as err:
        raise ConfigError(f"model: {cfg.model!r} does not fit {cfg.dataset} ({err}); allowed: "
                          f"{', '.join(MODELS)} with inputs it can take") from None


def _parse_list(name: str, text: str, convert, valid, allowed: str) -> tuple:
    """A comma-separated parameter ("" = none), each part converted and the whole checked."""
    if not text.strip():
        return ()
    try:
        values = tuple(convert(part) for part in text.split(","))
    except ValueError:
        values = None
    if values is None or not valid(values):
        raise ConfigError(f"{name}: {text!r} is not allowed; allowed: {allowed}")
    return values


def parse_milestones(text: str) -> tuple[int, ...]:
    """lr_milestones as rounds: comma-separated integers >= 1, increasing ("" = none)."""
    return _parse_list(
        "lr_milestones", text, int,
        lambda r: all(x >= 1 for x in r) and all(b > a for a, b in zip(r, r[1:])),
        "rounds as comma-separated integers >= 1 in increasing order, e.g. \"300,500\" "
        "(empty = a constant lr)")


def parse_levels(text: str) -> tuple[float, ...]:
    """pruning_levels as pruning ratios: comma-separated numbers in [0, 1), distinct ("" =
    none)."""
    return _parse_list(
        "pruning_levels", text, float,
        lambda v: all(math.isfinite(x) and 0.0 <= x < 1.0 for x in v) and len(set(v)) == len(v),
        "pruning ratios (fractions removed) in [0, 1), comma-separated and distinct, e.g. "
        "\"0,0.5,0.75,0.875,0.9375\" (empty = unused)")


# A run folder's name, with room left under the file system's 255-byte limit for the files
# named after it (a batch's logs/<run_name>.log).
MAX_NAME_BYTES = 200


def check_folder_name(name: str, param: str) -> None:
    """`name` must be one folder inside its parent: no separators, no `..`, not too long."""
    allowed = (f"a folder name of 1 to {MAX_NAME_BYTES} bytes without path separators or "
               f"control characters (not . or ..)")
    if (name in ("", ".", "..") or "/" in name or "\\" in name
            or any(_unprintable(c) for c in name)):
        raise ConfigError(f"{param}: {name!r} is not allowed; allowed: {allowed}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ConfigError(f"{param}: {len(name.encode('utf-8'))} bytes long, too long for a "
                          f"folder name; allowed: {allowed}")


def _check_enough_samples(cfg: ExperimentConfig) -> None:
    """Every client needs data: catch `--data_fraction 0.001 --num_clients 1000` before loading
    anything (the count is subsample()'s, per class, with classes taken as equally large)."""
    info = DATASETS[cfg.dataset]
    per_class = max(1, round(cfg.data_fraction * info.train_size / info.num_classes))
    samples = per_class * info.num_classes
    pieces = cfg.num_clients * (cfg.classes_per_client if cfg.partition == "shards" else 1)
    if pieces > samples:
        what = (f"{cfg.num_clients} clients x {cfg.classes_per_client} shards"
                if cfg.partition == "shards" else f"{cfg.num_clients} clients")
        raise ConfigError(
            f"num_clients: {what} need at least {pieces} training samples, but data_fraction "
            f"{cfg.data_fraction:g} of {cfg.dataset} leaves about {samples}; allowed: fewer "
            f"clients or a larger data_fraction")


def _unprintable(char: str) -> bool:
    """A control character, a line break, or a byte that is not UTF-8 (a surrogate that Python
    decoded it to): each breaks a log line, a job script or the tables naming the folder."""
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp")


def check_results_dir(results_dir: str) -> Path:
    """The results folder must be a folder this process can write: checked (and created) before
    any work, so a read-only or mistyped path is an error, not a traceback mid-run."""
    if any(_unprintable(c) for c in results_dir):
        raise ConfigError(f"results_dir: {results_dir!r} is not allowed; allowed: a folder path "
                          f"of UTF-8 text without control characters")
    path = Path(results_dir).expanduser()
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"results_dir: {results_dir} is a file; allowed: a folder "
                              f"(created if missing)")
    except OSError:
        pass
    writable_folder(path, "results_dir")
    return path


def writable_folder(path: Path, name: str) -> None:
    """`path` created if missing and proven writable (a probe file made and removed), else a
    ConfigError naming the parameter: said before any work, not as a traceback mid-run."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{os.getpid()}"
        probe.unlink(missing_ok=True)  # a stale one, of a killed process with this pid
        # created new, never through a link someone left at that name
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{name}: {path} is not a writable folder ({err.strerror}); "
                          f"allowed: a folder this user can write") from None


def check_device(device: str) -> None:
    """A CUDA device must exist: say so before any data is loaded."""
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} is not available (torch sees no CUDA device "
                          f"on this machine); allowed here: cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device: {device!r} does not exist; allowed: cpu, "
                          + ", ".join(f"cuda:{i}" for i in range(torch.cuda.device_count())))
