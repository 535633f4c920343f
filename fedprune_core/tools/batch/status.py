"""What a batch shows while it runs: one live line on a terminal, a line per settled unit in a log.

The batch learns each unit's progress from files its runs write anyway, with no IPC: a running
unit's metrics.csv gains a row per finished round (with that round's wall_time_sec), and a
unit's record (units/<index>.json) says when a try of it began. On a terminal (stderr a TTY)
one line is redrawn in place every second, and a line per settled unit is written above it:

    tour 00:02:13 | 1/4 done, 0 failed, 2 running, 1 queued | rounds 5/12 | ETA 00:03:20 | a 2/3

Elsewhere (a log file, a pipe) nothing is redrawn: each settled unit gets one line, with the
same status after it. `batch status` prints the status once, `--follow` as a batch does (the
way to follow a SLURM array, whose units only leave records and run folders).

The ETA is the time the rounds left take at the mean wall seconds per round of every round done
so far, across units (a running mean: it moves little as rounds come in), spread over the
batch's slots (each queued unit goes to the slot that frees first). Between rounds it counts
down with the clock; a round in progress counts for at most one mean round, so a slow round
holds the ETA rather than raising it. A try also spends time outside its rounds, starting up
and closing (figures, summary): a unit yet to reach its first round has the finished tries'
mean of it ahead, one past it their mean closing (both 0 until a try has finished).
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import io
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .grid import record_path, run_dir
from .summary import first_line, unit_state

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
# A record's (or `batch status` row's) status as the batch counts it.
SETTLED = {"finished": DONE, "skipped": DONE, "failed": FAILED}
CLEAR = "\x1b[K"  # erase to the end of the line: a shorter line leaves no tail behind


@dataclass
class Rounds:
    """A run's metrics.csv as last read: rounds done, their wall seconds, when it was written.

    Read again only when its mtime or size changed; the run writes it atomically (a rename), so
    a read sees a whole file, old or new."""

    path: Path
    rows: int = 0
    seconds: float = 0.0  # the sum of the rows' wall_time_sec
    timed: int = 0  # rows with a wall_time_sec
    mtime: Optional[float] = None
    key: Optional[tuple] = None

    def refresh(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:  # not written yet, or removed (a --force run starting over)
            self.rows, self.seconds, self.timed, self.mtime, self.key = 0, 0.0, 0, None, None
            return
        key = (stat.st_mtime_ns, stat.st_size)
        if key == self.key:
            return
        try:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError):  # keep what was read last
            return
        times = [t for t in (_seconds(row.get("wall_time_sec")) for row in rows) if t is not None]
        self.rows, self.seconds, self.timed = len(rows), sum(times), len(times)
        self.mtime, self.key = stat.st_mtime, key


def _seconds(text) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def clock_text(seconds: float) -> str:
    """HH:MM:SS (hours past 99 as they are), rounded up: an ETA never shows 0 too early."""
    total = math.ceil(max(0.0, seconds))
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


def unit_line(record: dict) -> str:
    """A settled unit as a batch reports it: `  name: status (seconds s): error`."""
    seconds = f" ({record['seconds']} s)" if record.get("seconds") is not None else ""
    error = f": {first_line(record['error'])}" if record.get("error") else ""
    return f"  {record['run_name']}: {record['status']}{seconds}{error}"


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class BatchStatus:
    """Each unit's state (queued, running, done, failed), the running units' rounds and the
    ETA, shown on `stream` (stderr): live on a terminal, a line per settled unit elsewhere.

    The back end says what it knows: `start` (the local pool took a unit), `settle` (a unit's
    final record), `watch_records` (Dask: running units are found from their records), `sync`
    (`batch status`: every unit's state from its files); `poll`, every `interval` seconds,
    rereads the running units' metrics.csv (and records when watched) and redraws the line."""

    interval = 1.0

    def __init__(self, grid: Path, units: list[dict], slots: int, name: str, force=False,
                 stream=None, clock=time.time, width: Optional[int] = None):
        self.grid, self.slots, self.name, self.force = Path(grid), slots, name, force
        self.stream = sys.stderr if stream is None else stream
        self.clock, self.width = clock, width
        self.began = clock()
        self.live = _is_terminal(self.stream)
        self.names = {u["index"]: u["run_name"] for u in units}
        self.state = {u["index"]: QUEUED for u in units}
        self.total = {u["index"]: int(u["config"]["rounds"]) if u["config"] else 0
                      for u in units}
        self.rounds = {u["index"]: Rounds(run_dir(u) / "metrics.csv") for u in units
                       if u["config"]}
        for rounds in self.rounds.values():  # earlier rounds (finished or resumable runs)
            rounds.refresh()
        self.started: dict[int, float] = {}
        # a try seen from its start: (rounds done, their wall seconds) then; the seconds each
        # finished try spent outside its rounds (start-up and closing), and after its last round
        self.tries: dict[int, tuple[int, float]] = {}
        self.overheads: list[float] = []
        self.closings: list[float] = []
        self.watched: Optional[dict[int, int]] = None  # watch_records: attempts before
        self.closed = False

    # --- what the back end says --------------------------------------------------------------

    def start(self, index: int, since: Optional[float] = None, seen: bool = True) -> None:
        """A try of the unit began (at `since`, a wall-clock time; default now); `seen`: from
        its beginning, so its rounds so far are not this try's (False: found running)."""
        self.state[index] = RUNNING
        self.started[index] = self.clock() if since is None else since
        if seen and index in self.rounds:
            self.rounds[index].refresh()
            rounds = self.rounds[index]
            self.tries[index] = (self._done(index), 0.0 if self.force else rounds.seconds)

    def settle(self, record: dict) -> dict:
        """The unit's final record (units/<index>.json): counted, and reported."""
        self._mark(record)
        self._report([record])
        return record

    def settle_all(self, records: list[dict]) -> None:
        """Units settled before anything runs (invalid, or finished already): their lines all
        show the batch as it then stands."""
        for record in records:
            self._mark(record)
        self._report(records)

    def watch_records(self) -> None:
        """Running units found from their records (Dask: which task a worker runs is not seen
        from here): a unit runs once its record says a try began, other than a try before."""
        self.watched = {i: _attempt(self._record(i)[0]) for i, s in self.state.items()
                        if s == QUEUED}

    def sync(self, rows: list[dict], report: bool = True) -> None:
        """Every unit's state from `batch status` rows (summary.unit_state): running while its
        record says so; with `report`, a line per unit settled (or settled otherwise) since."""
        changed = []
        for row in rows:
            index, old = row["unit"], self.state[row["unit"]]
            new = SETTLED.get(row["status"]) or (RUNNING if row["last_try"] == "running"
                                                 else QUEUED)
            if new == old:
                continue
            if new == RUNNING:  # the first sync finds tries under way, not from their start
                self.start(index, since=self._record(index)[1], seen=report)
            elif new == QUEUED:  # its record is gone
                self.state[index] = QUEUED
                self.started.pop(index, None), self.tries.pop(index, None)
            else:
                self._mark(row)
                changed.append(row)
        self._refresh()
        if report and changed:
            self._report(changed)

    def poll(self) -> None:
        """Reread what may have changed (the running units' metrics.csv, records if watched)
        and redraw the live line."""
        for index, before in (self.watched or {}).items():
            if self.state[index] == QUEUED:
                record, mtime = self._record(index)
                if record.get("status") == "running" and _attempt(record) > before:
                    self.start(index, since=mtime)
        self._refresh()
        if self.live:
            self._draw()

    def write(self, message: str) -> None:
        """A message of the batch's own, above the live line."""
        self._write([message])

    def close(self) -> None:
        """The live line's last state stays on the terminal, and the cursor leaves it."""
        if self.closed:
            return
        self.closed = True
        if self.live:
            self._refresh()
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    # --- what is shown -----------------------------------------------------------------------

    def text(self, now: Optional[float] = None) -> str:
        """`1/4 done, 0 failed, 2 running, 1 queued | rounds 5/12 | ETA 00:03:20 | a 2/3, b 1/3`."""
        now = self.clock() if now is None else now
        counts = Counter(self.state.values())
        done, total = self.round_counts()
        eta = self.eta(now)
        parts = [f"{counts[DONE]}/{len(self.state)} done, {counts[FAILED]} failed, "
                 f"{counts[RUNNING]} running, {counts[QUEUED]} queued",
                 f"rounds {done}/{total}", f"ETA {'?' if eta is None else clock_text(eta)}"]
        running = [f"{self.names[i]} {self.rounds_of(i)}" for i in self._in(RUNNING)]
        return " | ".join(parts + ([", ".join(running)] if running else []))

    def line(self, now: Optional[float] = None) -> str:
        """The live line: the batch's name and time so far, then `text`."""
        now = self.clock() if now is None else now
        return f"{self.name} {clock_text(now - self.began)} | {self.text(now)}"

    def rounds_of(self, index: int) -> str:
        """`done/total` rounds of a unit ("" for an invalid one)."""
        return f"{self._done(index)}/{self.total[index]}" if index in self.rounds else ""

    def round_counts(self) -> tuple[int, int]:
        """Rounds done and rounds in all, over the units not failed (a failed unit's rounds
        left will not run)."""
        kept = [i for i, s in self.state.items() if s != FAILED]
        return sum(self._done(i) for i in kept), sum(self.total[i] for i in kept)

    def seconds_per_round(self) -> Optional[float]:
        """The mean wall seconds of every round done so far, across units (None: none yet)."""
        timed = sum(r.timed for r in self.rounds.values())
        return sum(r.seconds for r in self.rounds.values()) / timed if timed else None

    def eta(self, now: float) -> Optional[float]:
        """Seconds until the unsettled units are done (module doc); None while rounds are left
        and none has been timed."""
        left = {i: self.total[i] - self._done(i) for i in self._in(RUNNING, QUEUED)}
        per = self.seconds_per_round()
        if per is None:  # no round timed yet; none left: only closings, if any
            if any(left.values()):
                return None
            per = 0.0
        over, closing = _mean(self.overheads), _mean(self.closings)
        slots = [self._running_left(i, left[i], per, over, closing, now)
                 for i in self._in(RUNNING)]
        slots += [0.0] * max(1 - len(slots), self.slots - len(slots))  # idle slots
        heapq.heapify(slots)
        for i in self._in(QUEUED):  # each to the slot that frees first
            heapq.heapreplace(slots, slots[0] + over + left[i] * per)
        return max(slots)

    def _running_left(self, index: int, left: int, per: float, over: float, closing: float,
                      now: float) -> float:
        """Seconds a running unit has left: its rounds left, less the time into the one in
        progress, which counts for at most one mean round (a slow round holds the ETA), then
        its closing. A try before its first round has its start-up ahead too (`over` in all)."""
        floor = (left - 1) * per + closing if left else 0.0  # the rounds after this one
        if index in self.tries and self._done(index) == self.tries[index][0]:
            return max(over + left * per - max(0.0, now - self.started[index]), floor)
        rounds = self.rounds.get(index)
        since = max(self.started[index], rounds.mtime or 0.0) if rounds else self.started[index]
        elapsed = max(0.0, now - since)
        return max(floor, left * per + closing - elapsed) if left else max(0.0, closing - elapsed)

    # --- inside ------------------------------------------------------------------------------

    def _in(self, *states) -> list[int]:
        return [i for i in sorted(self.state) if self.state[i] in states]

    def _done(self, index: int) -> int:
        rounds = self.rounds.get(index)
        if rounds is None:
            return 0
        if self.state[index] == DONE:
            return self.total[index]
        if self.force and (self.state[index] == QUEUED or (rounds.mtime or 0.0)
                           < self.started.get(index, 0.0)):
            return 0  # --force starts the run over: the old rows are not this try's
        return min(rounds.rows, self.total[index])

    def _mark(self, record: dict) -> None:
        index = record["unit"]
        self.state[index] = SETTLED.get(record["status"], FAILED)
        self.started.pop(index, None)
        if index in self.rounds:
            self.rounds[index].refresh()
        tried = self.tries.pop(index, None)
        if tried is not None and record["status"] == "finished" \
                and isinstance(record.get("seconds"), (int, float)):
            rounds = self.rounds[index]
            if rounds.rows > tried[0]:  # the try's time outside its rounds: every try spends it
                self.overheads.append(max(0.0, record["seconds"] - rounds.seconds + tried[1]))
                self.closings.append(max(0.0, self.clock() - (rounds.mtime or 0.0)))

    def _refresh(self) -> None:
        for index in self._in(RUNNING):
            if index in self.rounds:
                self.rounds[index].refresh()

    def _record(self, index: int) -> tuple[dict, Optional[float]]:
        """The unit's record as it stands and its mtime, quietly ({} if none or unreadable:
        grid.load_record's note would repeat every poll)."""
        path = record_path(self.grid, index)
        try:
            mtime = path.stat().st_mtime
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}, None
        return (record, mtime) if isinstance(record, dict) else ({}, mtime)

    def _report(self, records: list[dict]) -> None:
        if not records:
            return
        self._refresh()
        status = "" if self.live else f" | {self.text()}"  # on a terminal the live line has it
        self._write([unit_line(record) + status for record in records])

    def _write(self, lines: list[str]) -> None:
        text = "".join(line + "\n" for line in lines)
        if self.live:
            self.stream.write("\r" + CLEAR + text)
            self._draw()
        else:
            self.stream.write(text)
        self.stream.flush()

    def _draw(self) -> None:
        line = self.line()
        width = self._columns() - 1  # the last column would wrap on some terminals
        if len(line) > width:
            line = line[:max(0, width - 3)] + "..."
        self.stream.write("\r" + line + CLEAR)
        self.stream.flush()

    def _columns(self) -> int:
        if self.width is not None:
            return self.width
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            columns = 0
        # a terminal that does not say its size (0): $COLUMNS, else 80 columns
        return columns if columns > 0 else shutil.get_terminal_size().columns


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _attempt(record: dict) -> int:
    attempt = record.get("attempt")
    return attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0


def follow(grid: Path, units: list[dict], status: BatchStatus, interval: float = 2.0,
           sleep=time.sleep) -> None:
    """`batch status --follow`: the batch's status as `batch run` shows it, from its records
    and run folders, every `interval` seconds (a shared filesystem is read gently) until no
    unit is pending. A unit whose try was killed outright (a SLURM time limit) stays running
    by its record: Ctrl-C stops following, never the batch."""
    rows = [unit_state(grid, unit) for unit in units]
    status.sync(rows, report=False)
    try:
        with open(os.devnull, "w") as quiet:
            while any(row["status"] == "pending" for row in rows):
                status.poll()
                sleep(interval)
                with contextlib.redirect_stderr(quiet):  # a damaged record's note: once is enough
                    rows = [unit_state(grid, unit) for unit in units]
                status.sync(rows)
    finally:
        status.close()
