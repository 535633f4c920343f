"""Whole commands side by side, each a fresh process, alternated (A/B then B/A), the median
of the pairs: `make bench-side`.

- `flower`: the suite's FedAvg baseline (`python -m fedprune_core run --params
  params/ablations/baseline_fedavg.yaml --rounds N`) beside the same FedAvg as an app on Flower
  1.42's simulation engine (benchmarks/flower_reference.py, Ray with one CPU a ClientApp);
  walls include start-up and imports on both sides. Flower's peak RSS is its driver's alone
  (Ray's workers are other processes).
- `deploy`: the default run as `make run` executes it (the experiment notebook through
  papermill, then its HTML report) beside `make deploy` (a SuperLink and 4 SuperNodes on
  127.0.0.1, the same parameters), N rounds each; the issue's target: the deployment within
  1.5x of the simulation's wall time. Their numbers are the same (tests/test_deploy.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import alternate, load_avg

REPO = Path(__file__).resolve().parent.parent
FEDAVG = REPO / "params" / "ablations" / "baseline_fedavg.yaml"
DEFAULT = REPO / "params" / "default.yaml"


def flower_commands(rounds: int, out: Path) -> dict:
    python = sys.executable
    return {
        "suite": ([python, "-m", "fedprune_core", "run", "--params", str(FEDAVG), "--rounds",
                   str(rounds), "--results_dir", str(out), "--progress", "off", "--run_name",
                   f"fedavg_{time.monotonic_ns()}"], REPO),
        "flower": ([python, str(REPO / "benchmarks" / "flower_reference.py"), "--params",
                    str(FEDAVG), "--rounds", str(rounds)], REPO)}


def deploy_commands(rounds: int, out: Path, nodes: int = 4) -> dict:
    python = sys.executable
    name = f"default_{time.monotonic_ns()}"
    common = ["--params", str(DEFAULT), "--rounds", str(rounds), "--results_dir", str(out)]
    return {
        "simulation": ([python, "-m", "fedprune_core", "notebook", *common, "--report", "html",
                        "--run_name", f"sim_{name}"], REPO),
        "deployment": ([python, "-m", "fedprune_core", "deploy", *common, "--nodes", str(nodes),
                        "--run_name", f"dep_{name}"], REPO)}


def compare(which: str, rounds: int, pairs: int) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    make = {"flower": flower_commands, "deploy": deploy_commands}[which]
    with tempfile.TemporaryDirectory(prefix=f"fedprune-{which}-bench-") as tmp:
        row = alternate(lambda: make(rounds, Path(tmp)), pairs, env)
    a, b = {"flower": ("flower", "suite"), "deploy": ("deployment", "simulation")}[which]
    row["wall_ratio"] = row[a]["wall_sec"] / row[b]["wall_sec"]
    row["ratio_of"] = f"{a} / {b}"
    return {"rounds": rounds, "pairs": pairs, **row}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", choices=("flower", "deploy"),
                        default=["flower", "deploy"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "side.json")
    args = parser.parse_args(argv)
    res = {"load_avg_start": load_avg()}
    for which in args.which:
        res[which] = compare(which, args.rounds, args.pairs)
        r = res[which]
        sides = [k for k in r if isinstance(r[k], dict) and "wall_sec" in r[k]]
        print(f"{which}: " + ", ".join(f"{s} {r[s]['wall_sec']:.1f} s (CPU {r[s]['cpu_sec']:.1f} "
                                       f"s, peak RSS {r[s]['peak_rss_mb']:.0f} MB)"
                                       for s in sides)
              + f"; {r['ratio_of']} = {r['wall_ratio']:.2f}x", flush=True)
    res["load_avg_end"] = load_avg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
