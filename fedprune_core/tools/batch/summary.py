"""What a batch prints and writes: the per-unit table, `batch.json`, and each unit's state as
`batch status` shows it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Optional

from ...run.artifacts import write_atomic
from .grid import load_record, other_parameters, run_dir

SUMMARY = "batch.json"


COLUMNS = ("unit", "run_name", "status", "seconds", "error", "log")


def first_line(text: Optional[str], width: int = 80) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[:width - 3] + "..."


def _shown(value, column: str) -> str:
    if column == "error":
        return first_line(value)
    if column == "log" and value:
        with contextlib.suppress(ValueError):
            return str(Path(value).relative_to(Path.cwd()))
    return "" if value is None else str(value)


def format_table(rows: list[dict], columns) -> str:
    cells = [[_shown(row.get(c), c) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def finish(grid: Path, records: list[dict], backend: str, seconds: float) -> int:
    """Print the table, write batch.json; non-zero if any unit failed."""
    records = sorted(records, key=lambda r: r["unit"])
    print(format_table(records, COLUMNS))
    counts = write_summary(grid, records, backend, seconds)
    print(f"{len(records)} units: {counts['finished']} finished, {counts['skipped']} skipped, "
          f"{counts['failed']} failed in {seconds:.0f} s; summary: {grid.parent / SUMMARY}")
    return 1 if counts["failed"] else 0


def write_summary(grid: Path, records: list[dict], backend: str, seconds=None) -> Counter:
    counts = Counter(r["status"] for r in records)
    summary = {"batch": grid.parent.name, "backend": backend, "grid": str(grid),
               "written": dt.datetime.now().isoformat(timespec="seconds"),
               "wall_sec": None if seconds is None else round(seconds, 1),
               "counts": dict(counts),
               "units": [{c: r.get(c) for c in (*COLUMNS, "attempt")} for r in records]}
    write_atomic(grid.parent / SUMMARY, json.dumps(summary, indent=1))
    return counts


def unit_state(grid: Path, unit: dict) -> dict:
    """A unit as `status` shows it: its run folder's state, its last try's record, and its
    batch status (finished, skipped, failed, or pending while it may still run)."""
    from ...run.artifacts import run_state

    record = load_record(grid, unit["index"]) or {}
    state = "invalid" if unit["error"] else run_state(run_dir(unit))
    if state == "finished" and other_parameters(unit):
        state, record = "other params", {**record, "error": other_parameters(unit)}
    last = record.get("status", "-")
    if state == "finished":
        status = last if last in ("finished", "skipped") else "finished"
    else:
        status = "failed" if state in ("invalid", "other params") or last == "failed" \
            else "pending"
    return {"unit": unit["index"], "run_name": unit["run_name"],
            "state": {"new": "not started"}.get(state, state), "last_try": last,
            "status": status, "seconds": record.get("seconds"),
            "attempt": record.get("attempt"),
            "error": unit["error"] or (record.get("error") if state != "finished" else None),
            "log": record.get("log")}


