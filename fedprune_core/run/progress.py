"""Progress a user can see, inside a round too: one step per client update, with an ETA.

`auto`: a tqdm bar (a widget in JupyterLab) counting client updates, with the round and the last
accuracy beside it. `text` (papermill, batches): a short line per client update on stdout, with
the ETA, which papermill streams as the kernel prints it; the round lines come from the log.
`off`: nothing. The run log gets its own per-client lines either way.
"""

from __future__ import annotations

import math
import sys
import time


class Progress:
    def __init__(self, mode: str, run_name: str, rounds: int, per_round: int, start_round: int):
        self.mode, self.rounds, self.per_round = mode, rounds, per_round
        self.total = rounds * per_round
        self.done = self.start = (start_round - 1) * per_round
        self.began = time.perf_counter()
        self.bar = None
        if mode == "auto":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc=run_name,
                            unit="update", dynamic_ncols=True)

    def eta(self) -> str:
        """Time left at this run's pace so far (its evaluations included)."""
        made = self.done - self.start
        if made == 0:
            return "?"
        seconds = (time.perf_counter() - self.began) / made * (self.total - self.done)
        return time.strftime("%H:%M:%S", time.gmtime(math.ceil(seconds)))

    def client_done(self, row: dict) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(round=f"{row['round']}/{self.rounds}", refresh=False)
            self.bar.update(1)
        elif self.mode == "text":
            k = self.done - (row["round"] - 1) * self.per_round
            print(f"  round {row['round']}/{self.rounds}: client {k}/{self.per_round} done "
                  f"(client {row['client_id']}, loss {row['train_loss']:.4f}); "
                  f"ETA {self.eta()}", file=sys.stdout, flush=True)

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
