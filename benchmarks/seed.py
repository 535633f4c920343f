"""The suite beside the seed's own code, side by side: `make bench-seed SEED_REPO=PATH`.

The seed (github.com/thiefcoder/fedprune-sparse: `git clone
https://github.com/thiefcoder/fedprune-sparse` and pass its folder as SEED_REPO) runs its
default hybrid experiment with `python run_simulation.py --rounds N`; the suite runs the same
experiment, `make run`'s parameters (params/default.yaml), with `python -m fedprune_core run
--rounds N`. Both in this environment (the seed needs only torch, torchvision and matplotlib),
on the same MNIST files, each in a fresh process, alternated A/B then B/A so that a drift of
the machine's speed falls on both; per round count the median of the pairs' wall seconds, CPU
seconds (user + sys, the child's own) and peak resident memory (the child's largest: each is
one process), and the ratio seed / suite of the walls.

Nothing of the seed is imported or copied: it runs as its own program from its own folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import alternate

REPO = Path(__file__).resolve().parent.parent
ROUNDS = (5, 10, 20)
HOW_TO_GET = ("git clone https://github.com/thiefcoder/fedprune-sparse /path/to/seed, then "
              "make bench-seed SEED_REPO=/path/to/seed")


def commands(seed_repo: Path, rounds: int, data_root: str, out: Path,
             suite_args: tuple[str, ...] = ()) -> dict[str, tuple[list[str], Path]]:
    python = sys.executable
    return {
        "seed": ([python, "run_simulation.py", "--rounds", str(rounds), "--data_root", data_root,
                  "--results_dir", str(out / "seed")], seed_repo),
        "suite": ([python, "-m", "fedprune_core", "run", "--params",
                   str(REPO / "params" / "default.yaml"), "--rounds", str(rounds),
                   "--data_root", data_root, "--results_dir", str(out / "suite"),
                   "--run_name", f"default_{rounds}_{time.monotonic_ns()}", "--progress", "off",
                   *suite_args], REPO)}


def compare(seed_repo: Path, rounds=ROUNDS, pairs: int = 2, data_root: str | None = None,
            suite_args: tuple[str, ...] = ()) -> dict:
    """Per round count: each side's median wall/CPU/peak RSS over `pairs` alternated pairs,
    and seed wall / suite wall."""
    data_root = data_root or os.environ.get("FEDPRUNE_DATA_ROOT") or str(REPO / "data")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out: dict = {"seed_repo": str(seed_repo), "pairs": pairs, "rounds": {}}
    with tempfile.TemporaryDirectory(prefix="fedprune-seed-bench-") as tmp:
        for n in rounds:
            row = alternate(lambda: commands(seed_repo, n, data_root, Path(tmp), suite_args),
                            pairs, env)
            row["wall_ratio"] = row["seed"]["wall_sec"] / row["suite"]["wall_sec"]
            out["rounds"][str(n)] = row
    return out


def table(res: dict) -> str:
    lines = ["| Rounds | Seed wall (s) | Suite wall (s) | Seed / suite | Seed CPU (s) | Suite CPU "
             "(s) | Seed peak RSS (MB) | Suite peak RSS (MB) |", "|---|---|---|---|---|---|---|---|"]
    for n, r in res["rounds"].items():
        lines.append(f"| {n} | {r['seed']['wall_sec']:.1f} | {r['suite']['wall_sec']:.1f} | "
                     f"{r['wall_ratio']:.2f}x | {r['seed']['cpu_sec']:.1f} | "
                     f"{r['suite']['cpu_sec']:.1f} | {r['seed']['peak_rss_mb']:.0f} | "
                     f"{r['suite']['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-repo", default=os.environ.get("SEED_REPO"))
    parser.add_argument("--rounds", type=int, nargs="*", default=list(ROUNDS))
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "seed.json")
    args = parser.parse_args(argv)
    if not args.seed_repo or not (Path(args.seed_repo) / "run_simulation.py").is_file():
        print(f"seed comparison skipped: SEED_REPO names no checkout of the seed "
              f"({args.seed_repo or 'not set'}); {HOW_TO_GET}")
        return 0
    res = {"load_avg_start": os.getloadavg()[0],
           **compare(Path(args.seed_repo), args.rounds, args.pairs)}
    res["load_avg_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(table(res))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
