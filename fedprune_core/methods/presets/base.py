"""What a preset (a method picked by name) declares.

`method: <name>` in a params file, on the command line or in the notebook sets the fields in
`sets`; the method's `knobs` stay the user's to tune, beside it. Writing the same fields out by
hand is the same run: the name is only a shorthand (it is not part of what makes two runs the
same experiment, and labels are derived from the fields either way).

`check(cfg, need)` holds the method's requirements on any configuration that uses its parts,
named or written out: `need(condition, field, allowed)` raises the ConfigError that names the
field and what is allowed. Every preset's check runs on every configuration, so a requirement
lives beside the method it belongs to, not in a list of every method's combinations.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

Need = Callable[[bool, str, str], None]


class Preset:
    sets: ClassVar[dict[str, Any]] = {}
    knobs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check(cls, cfg, need: Need) -> None:
        """The method's requirements (none by default)."""

    @classmethod
    def describe(cls) -> str:
        """One line for `--help` and the README: the docstring's first sentence."""
        return (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
