"""A horizon chosen from FedAvg's curve, not by habit: the first round after which its tail mean
stops rising.

The tail mean at round R is the mean test accuracy of the `window` evaluated rounds up to R.
The curve has plateaued at R when the tail mean rose by less than `tolerance` points over the
last `span` rounds: tail(R) - tail(R - span) < tolerance (a non-IID curve swings by points from
round to round; a 10-round mean moves far less). `python -m fedprune_core.analysis.horizon
RUN_FOLDER` prints it for a run (make horizon).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

WINDOW, SPAN, TOLERANCE = 10, 50, 0.3


@dataclass(frozen=True)
class Plateau:
    round: Optional[int]  # the first plateaued round (None: not within the run)
    tail: Optional[float]  # the tail mean there
    rise: Optional[float]  # how much it rose over the span before it
    rounds_run: int

    def describe(self, window: int = WINDOW, span: int = SPAN,
                 tolerance: float = TOLERANCE) -> str:
        if self.round is None:
            return (f"no plateau within the {self.rounds_run} rounds run: the {window}-round "
                    f"tail mean still rose by {tolerance:g} points or more over every "
                    f"{span}-round span; run longer")
        return (f"plateau at round {self.round}: the {window}-round tail mean is "
                f"{self.tail:.2f}% and rose {self.rise:+.2f} points over the {span} rounds "
                f"before (less than {tolerance:g})")


def tail_means(metrics: pd.DataFrame, window: int = WINDOW) -> pd.Series:
    """Per evaluated round: the mean test accuracy of the `window` evaluated rounds up to it."""
    evaluated = metrics.dropna(subset=["test_accuracy"]).sort_values("round")
    return evaluated.set_index("round")["test_accuracy"].rolling(window).mean().dropna()


def plateau(metrics: pd.DataFrame, window: int = WINDOW, span: int = SPAN,
            tolerance: float = TOLERANCE) -> Plateau:
    tails = tail_means(metrics, window)
    rounds = int(metrics["round"].max()) if len(metrics) else 0
    for r, tail in tails.items():
        before = tails[tails.index <= r - span]
        if len(before) and tail - before.iloc[-1] < tolerance:
            return Plateau(int(r), float(tail), float(tail - before.iloc[-1]), rounds)
    return Plateau(None, None, None, rounds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedprune_core.analysis.horizon",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder (its metrics.csv)")
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--span", type=int, default=SPAN)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    path = Path(args.run_dir) / "metrics.csv"
    if not path.is_file():
        print(f"error: run_dir: {path} does not exist; allowed: a run folder", file=sys.stderr)
        return 2
    found = plateau(pd.read_csv(path), args.window, args.span, args.tolerance)
    print(found.describe(args.window, args.span, args.tolerance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
