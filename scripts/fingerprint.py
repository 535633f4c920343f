"""Fingerprints of a matrix of tiny runs, to prove that a refactoring changes no number.

Each case (a params file or a set of parameters) runs on every engine at a tiny scale; its
fingerprint is the SHA-256 of metrics.csv, clients.csv, widths.csv and diagnostics.csv without
the measured-time columns, and of final_model.pt's tensors. Run it on two commits and compare:

    python scripts/fingerprint.py --out /tmp/before.json            # on the old commit
    python scripts/fingerprint.py --out /tmp/after.json --compare /tmp/before.json

`--source DIR` imports the package from another checkout (a git worktree of the old commit),
so both sides run in the same environment. Only the public API is used (ExperimentConfig,
run_experiment), so the script runs unchanged on older commits.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(rounds=3, num_clients=6, clients_per_round=3, data_fraction=0.03, test_samples=300,
            local_epochs=1, batch_size=32, tail_rounds=2, progress="off")
ENGINES = {"sequential": dict(engine="sequential", num_threads=1),
           "parallel": dict(engine="parallel", num_threads=2),
           "cohort": dict(engine="cohort", num_threads=1)}
# what the params files do not cover: every training option, schedules, levels, other models
EXTRA = {
    "sgd_options": dict(momentum=0.9, weight_decay=5e-4, grad_clip_norm=1.0),
    "lr_schedule": dict(lr_milestones="1,2", lr_gamma=0.5, momentum=0.5),
    "levels_fixed": dict(structured_selection="first", local_training="scaler",
                         adaptive_ratio=False, width_levels="1,0.5,0.25"),
    "levels_dynamic": dict(structured_selection="first", local_training="scaler",
                           masked_ce=True, adaptive_ratio=False, width_levels="1,0.5,0.25",
                           level_assignment="dynamic"),
    "fjord_distill": dict(structured_selection="first", local_training="fjord",
                          fjord_distill=True, fjord_levels=3),
    "fedavgm_drift": dict(aggregation="fedavgm", momentum_untrained="drift"),
    "online_ratio": dict(adaptive_ratio_online=True),
    "unstructured_all": dict(pruning_mode="unstructured", unstructured_contribution="all",
                             error_feedback=False),
    "preresnet_bn": dict(model="preresnet18", model_width=0.0625, structured_selection="first",
                         local_training="scaler", grad_clip_norm=1.0, norm_stats_samples=200),
    "preresnet_gn": dict(model="preresnet18", model_width=0.0625, model_norm="gn",
                         structured_selection="rolex", rolex_step=2),
}
TIME_COLUMNS = ("avg_round_time_sec", "eval_time_sec", "diagnostic_time_sec", "wall_time_sec",
                "elapsed_sec", "update_time_sec", "train_time_sec", "node_time_sec")


def cases() -> dict[str, tuple[list[str], dict]]:
    out = {}
    for pattern in ("params/ablations/*.yaml", "params/width_study/*.yaml"):
        for path in sorted(glob.glob(str(ROOT / pattern))):
            if not Path(path).name.startswith("_"):
                out[f"{Path(path).parent.name}/{Path(path).stem}"] = ([path], {})
    out.update({name: ([], changes) for name, changes in EXTRA.items()})
    return out


def digest_csv(path: Path) -> str:
    import pandas as pd

    if not path.exists():
        return "absent"
    frame = pd.read_csv(path)
    frame = frame.drop(columns=[c for c in TIME_COLUMNS if c in frame.columns])
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:16]


def digest_model(path: Path) -> str:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(run_dir: Path) -> dict:
    return {**{name: digest_csv(run_dir / f"{name}.csv")
               for name in ("metrics", "clients", "widths", "diagnostics")},
            "final_model": digest_model(run_dir / "final_model.pt")}


def _today(changes: dict) -> dict:
    """`width_levels` (kept fractions, before it was replaced) as `pruning_levels` where the
    configuration has it: the same levels, so the same numbers."""
    import dataclasses

    from fedprune_core.config import ExperimentConfig

    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    if "width_levels" in changes and "pruning_levels" in names:
        levels = ",".join(repr(1.0 - float(v)) for v in changes["width_levels"].split(","))
        changes = {**{k: v for k, v in changes.items() if k != "width_levels"},
                   "pruning_levels": levels}
    return changes


def run_case(files: list[str], changes: dict, engine: str, results: str) -> dict:
    from fedprune_core.config import ExperimentConfig
    from fedprune_core.run.loop import run_experiment

    changes = _today(changes)
    overrides = {**TINY, **changes, **ENGINES[engine], "results_dir": results,
                 "run_name": "case", "overwrite": True}
    try:
        cfg = ExperimentConfig.from_yaml(*files, overrides=overrides)
        run_experiment(cfg)
    except Exception as err:  # noqa: BLE001 - a failing case is a fingerprint too
        return {"error": f"{type(err).__name__}: {str(err)[:200]}"}
    return fingerprint(Path(results) / "case")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--compare", help="a fingerprint file to compare with")
    parser.add_argument("--source", help="import fedprune_core from this checkout")
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    parser.add_argument("--engines", nargs="*", default=list(ENGINES))
    args = parser.parse_args()
    if args.source:
        sys.path.insert(0, str(Path(args.source).resolve()))
    import fedprune_core

    print(f"fedprune_core from {Path(fedprune_core.__file__).parent}", flush=True)
    os.environ.setdefault("FEDPRUNE_DATA_ROOT", str(ROOT.parent / "shared" / "data"))
    chosen = {k: v for k, v in cases().items() if not args.only or k in args.only}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (files, changes) in chosen.items():
            for engine in args.engines:
                start = time.perf_counter()
                out[f"{name}@{engine}"] = run_case(files, changes, engine, tmp)
                print(f"{name}@{engine}: {out[f'{name}@{engine}']} "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True))
    if not args.compare:
        return 0
    before = json.loads(Path(args.compare).read_text())
    differ = [k for k in out if k in before and out[k] != before[k]]
    for k in differ:
        print(f"DIFFERS {k}: before {before[k]} now {out[k]}")
    same = sum(1 for k in out if k in before and out[k] == before[k])
    print(f"{same} identical, {len(differ)} differ, "
          f"{sum(1 for k in out if k not in before)} new")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
