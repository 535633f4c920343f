"""The experiment's flags, generated from ExperimentConfig (booleans get `--name` and
`--no_name`), so flags, defaults and help cannot drift from the configuration; and the parser
whose usage errors are two lines: a short usage, then what was wrong with the closest flag or
value suggested (`did you mean --sparsity_ratio?`)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys

from .checks import choices
from .config import ExperimentConfig, closest


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "auto") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _typed(kind):
    """int or float with argparse's error in this CLI's words ("expected int, got 'x'")."""
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
    parse.__name__ = kind.__name__
    return parse


def add_params_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", action="append", metavar="FILE.yaml",
                        help="YAML parameter file (repeatable; later files and flags win).")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ExperimentConfig field; unset flags stay out of the namespace."""
    group = parser.add_argument_group("experiment parameters (defaults from ExperimentConfig)")
    for f in dataclasses.fields(ExperimentConfig):
        default = repr(f.default) if f.default == "" else f.default
        help_text = f"{f.metadata['help']} (default: {default})".replace("%", "%%")
        kind = f.type.replace("Optional[", "").rstrip("]")
        if kind == "bool":
            group.add_argument(f"--{f.name}", dest=f.name, action="store_const", const=True,
                               default=argparse.SUPPRESS, help=help_text)
            group.add_argument(f"--no_{f.name}", dest=f.name, action="store_const",
                               const=False, default=argparse.SUPPRESS,
                               help=f"Turn {f.name} off.")
            continue
        parse = {"int": _typed(int), "float": _typed(float), "str": str}[kind]
        if f.type.startswith("Optional"):
            parse = _optional(parse)
        allowed = choices(f)
        group.add_argument(f"--{f.name}", dest=f.name, type=parse, default=argparse.SUPPRESS,
                           choices=allowed or None, metavar=kind.upper(),
                           help=help_text + (f"; one of {', '.join(c for c in allowed if c)}"
                                             if allowed else ""))
    # The seed's switches, kept as shorthands for the `none` method.
    group.add_argument("--no_pruning", dest="pruning_mode", action="store_const", const="none",
                       default=argparse.SUPPRESS, help="Same as --pruning_mode none.")
    group.add_argument("--no_sparsification", dest="sparsify_method", action="store_const",
                       const="none", default=argparse.SUPPRESS,
                       help="Same as --sparsify_method none.")


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return ExperimentConfig.from_yaml(*(args.params or []), overrides=overrides)


class Parser(argparse.ArgumentParser):
    """argparse with whole flag names only (an abbreviation that a new flag would make
    ambiguous is a trap for scripts) and usage errors in two lines, status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def short_usage(self) -> str:
        takes = "[--params FILE.yaml] [--PARAMETER VALUE ...]" if any(
            "--params" in a.option_strings for a in self._actions) else "..."
        return f"usage: {self.prog} {takes} (--help: every flag)"

    def error(self, message):  # argparse's own errors: this CLI's one-line style
        self.exit(2, f"{self.short_usage()}\nerror: {self.explain(message)}\n")

    def explain(self, message: str) -> str:
        match = re.match(r"argument (\S+?)(?:/\S+)?: invalid choice: '?(.*?)'? \(choose from (.*)\)$",
                         message)
        if match:
            flag, value, allowed = match.groups()
            options = [c.strip().strip("'") for c in allowed.split(",")]
            guess = closest(value, [o for o in options if o])
            return (f"{flag.lstrip('-')}: {value!r} is not allowed; allowed: "
                    f"{', '.join(o for o in options if o)}"
                    + (f" (did you mean {guess}?)" if guess else ""))
        match = re.match(r"unrecognized arguments: (.*)$", message)
        if match:
            return self.unrecognized(match[1].split())
        message = re.sub(r"invalid (\w+) value: (.*)$", r"expected \1, got \2", message)
        return re.sub(r"^argument (--\w+)(?:/\S+)?: ", lambda m: m[1].lstrip("-") + ": ", message)

    def unrecognized(self, extras: list[str]) -> str:
        flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        first = next((e for e in extras if e.startswith("-")), extras[0])
        name = first.split("=", 1)[0]
        guess = closest(name, flags) if name.startswith("--") else None
        return (f"unrecognized argument {first}" + (f"; did you mean {guess}?" if guess else
                                                    f"; allowed: the flags of {self.prog} --help"))


def parse_command_line(parser: Parser, argv) -> argparse.Namespace:
    """Parse, reporting a flag no subcommand knows with the subcommand's usage and its closest
    flag (argparse would print the top-level usage and no suggestion)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = _subparser(parser, getattr(args, "command", None)) or parser
        sub.exit(2, f"{sub.short_usage()}\nerror: {sub.unrecognized(extras)}\n")
    return args


def _subparser(parser: Parser, command):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def print_error(line: str) -> None:
    print(line, file=sys.stderr)
