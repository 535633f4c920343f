"""Progress a user can see, inside a round too, with a steady estimate of the time left.

`auto`: on a terminal, one live bar per round (the round's client updates, the run's ETA) that
gives way to the round's line when the round ends; in JupyterLab one widget bar for the run.
`text` (papermill, batches): a short line per client update on stdout, with the ETA, which
papermill streams as the kernel prints it (`LiveLines` turns those lines back into the live
bar when the terminal that runs the notebook is one). `off`: nothing. The run log gets its own
per-client lines either way.

The ETA is a running mean: the seconds an update has taken on average since the run started
here, the first update left out (it pays the first kernels' warm-up), times the updates left.
"""

from __future__ import annotations

import math
import re
import sys
import time
from typing import Optional

# the line `text` prints per client update (LiveLines reads it back)
CLIENT_LINE = re.compile(r"^  round (\d+)/(\d+): client (\d+)/(\d+) done .*; ETA (\S+)$")


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(math.ceil(seconds)))


class RoundBar:
    """One live terminal line per round: `round r/R` and its client updates, the run's ETA; on
    `finish` it is cleared so that the round's own line (the log's) takes its place."""

    def __init__(self, stream=None):
        self.stream, self.bar = stream or sys.stderr, None

    def show(self, round_idx: int, rounds: int, done: int, per_round: int, eta: str) -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.desc != f"round {round_idx}/{rounds}":
            self.finish()
            self.bar = tqdm(total=per_round, desc=f"round {round_idx}/{rounds}",
                            unit="update", leave=False, file=self.stream, dynamic_ncols=True,
                            bar_format="{desc} {bar} {n_fmt}/{total_fmt} updates{postfix}")
        self.bar.postfix = f"ETA {eta}"  # tqdm writes it after ", "
        self.bar.n = done
        self.bar.refresh()

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Progress:
    def __init__(self, mode: str, run_name: str, rounds: int, per_round: int, start_round: int,
                 terminal: Optional[bool] = None):
        self.mode, self.rounds, self.per_round = mode, rounds, per_round
        self.total = rounds * per_round
        self.done = self.start = (start_round - 1) * per_round
        self.first: Optional[float] = None  # when the first update here finished
        self.bar, self.round_bar = None, None
        terminal = sys.stderr.isatty() if terminal is None else terminal
        if mode == "auto" and terminal and not _in_kernel():
            self.round_bar = RoundBar()
        elif mode == "auto":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc=run_name,
                            unit="update", dynamic_ncols=True)

    def eta(self) -> str:
        """Time left at the mean pace of this run's updates so far (the first left out)."""
        made = self.done - self.start - 1
        if self.first is None or made < 1:
            return "?"
        return _clock((time.perf_counter() - self.first) / made * (self.total - self.done))

    def client_done(self, row: dict) -> None:
        self.done += 1
        if self.first is None:
            self.first = time.perf_counter()
        k = self.done - (row["round"] - 1) * self.per_round
        if self.round_bar is not None:
            self.round_bar.show(row["round"], self.rounds, k, self.per_round, self.eta())
        elif self.bar is not None:
            self.bar.set_postfix(round=f"{row['round']}/{self.rounds}", refresh=False)
            self.bar.update(1)
        elif self.mode == "text":
            loss = "sat out" if row["status"] == "sat_out" else (
                "missing" if row["status"] == "missing" else f"loss {row['train_loss']:.4f}")
            print(f"  round {row['round']}/{self.rounds}: client {k}/{self.per_round} done "
                  f"(client {row['client_id']}, {loss}); ETA {self.eta()}", file=sys.stdout,
                  flush=True)

    def round_ending(self) -> None:
        """Before the round's line is logged: the round's live bar gives way to it."""
        if self.round_bar is not None:
            self.round_bar.finish()

    def round_done(self, row: dict) -> None:
        self.done = row["round"] * self.per_round  # a missing update still ends its round
        if self.bar is not None:
            if not math.isnan(row["test_accuracy"]):
                self.bar.set_postfix(round=f"{row['round']}/{self.rounds}",
                                     acc=f"{row['test_accuracy']:.2f}%", refresh=False)
            self.bar.n = self.done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.round_bar is not None:
            self.round_bar.finish()


def _in_kernel() -> bool:
    """Inside a Jupyter kernel (JupyterLab's widget bar, not a terminal's)."""
    return "ipykernel" in sys.modules


class LiveLines:
    """A stream for the notebook kernel's printed output (papermill's stdout_file): on a
    terminal its client-update lines become the live round bar and everything else passes
    through; elsewhere (a log) every line passes through as it is."""

    def __init__(self, out=None, terminal: Optional[bool] = None):
        self.out = out or sys.stdout
        self.terminal = self.out.isatty() if terminal is None else terminal
        self.bar, self.pending = RoundBar(self.out), ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            match = CLIENT_LINE.match(line) if self.terminal else None
            if match:
                r, rounds, k, per_round = map(int, match.groups()[:4])
                self.bar.show(r, rounds, k, per_round, match[5])
            else:
                self.bar.finish()
                self.out.write(line + "\n")
        self.out.flush()
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if self.pending:
            self.write("\n")
        self.bar.finish()
