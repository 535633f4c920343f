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
from .grid import load_record, other_parameters, read_grid, run_dir

SUMMARY = "batch.json"


COLUMNS = ("unit", "run_name", "status", "seconds", "error", "log")
# The closing table also shows each finished run's headline, read from its summary.json.
HEADLINE = {"tail_test_accuracy": "tail acc (%)", "total_uplink_mb": "uplink (MB)"}
RESULT_COLUMNS = (*COLUMNS[:4], *HEADLINE, *COLUMNS[4:])


def first_line(text: Optional[str], width: int = 80) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[:width - 3] + "..."


def _shown(value, column: str) -> str:
    if column in HEADLINE:
        return "" if value is None else f"{value:,.2f}"
    if column == "error":
        return first_line(value)
    if column == "log" and value:
        with contextlib.suppress(ValueError):
            return str(Path(value).relative_to(Path.cwd()))
    return "" if value is None else str(value)


def format_table(rows: list[dict], columns) -> str:
    cells = [[_shown(row.get(c), c) for c in columns] for row in rows]
    names = [HEADLINE.get(c, c) for c in columns]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(names)]
    right = [c in HEADLINE or c == "seconds" for c in columns]  # numbers align right
    lines = ["  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(names, widths, right))]
    lines += ["  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(row, widths, right))
              for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def headline(grid: Path, records: list[dict]) -> list[dict]:
    """`records` with each finished run's tail accuracy and uplink MB (HEADLINE) from its
    summary.json; None where the run did not finish or its summary cannot be read."""
    try:
        folders = {u["index"]: run_dir(u) for u in read_grid(grid) if u["config"]}
    except (ValueError, OSError):  # ConfigError: no readable grid, nothing to add
        folders = {}
    out = []
    for record in records:
        values = dict.fromkeys(HEADLINE)
        folder = folders.get(record.get("unit"))
        if folder is not None and record.get("status") in ("finished", "skipped"):
            with contextlib.suppress(ValueError, OSError, TypeError, AttributeError):
                summary = json.loads((folder / "summary.json").read_text())
                values = {k: float(summary[k]) if isinstance(summary.get(k), (int, float))
                          else None for k in HEADLINE}
        out.append({**record, **values})
    return out


def finish(grid: Path, records: list[dict], backend: str, seconds: float) -> int:
    """Print the table (with each finished run's headline), write batch.json; non-zero if
    any unit failed."""
    records = headline(grid, sorted(records, key=lambda r: r["unit"]))
    print(format_table(records, RESULT_COLUMNS))
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
               "units": [{c: r.get(c) for c in (*RESULT_COLUMNS, "attempt")}
                         for r in records]}
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


