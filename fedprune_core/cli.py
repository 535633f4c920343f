"""Command line: `python -m fedprune_core run [--params FILE.yaml] [--flag value ...]`.

Every flag is generated from ExperimentConfig (booleans get `--name` and `--no_name`), so the
flags, their defaults and their help cannot drift from the configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional

from .config import ConfigError, ExperimentConfig


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


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ExperimentConfig field; unset flags stay out of the namespace."""
    group = parser.add_argument_group("experiment parameters (defaults from ExperimentConfig)")
    for f in dataclasses.fields(ExperimentConfig):
        help_text = f"{f.metadata['help']} (default: {f.default})".replace("%", "%%")
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
        group.add_argument(f"--{f.name}", dest=f.name, type=parse, default=argparse.SUPPRESS,
                           choices=f.metadata["choices"] or None, metavar=kind.upper(),
                           help=help_text + (f"; one of {', '.join(f.metadata['choices'])}"
                                             if f.metadata["choices"] else ""))
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


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: same one-line style, status 2
        import re

        message = re.sub(r"invalid choice: (.*) \(choose from (.*)\)$",
                         r"\1 is not allowed; allowed: \2", message)
        message = re.sub(r"invalid (\w+) value: (.*)$", r"expected \1, got \2", message)
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m fedprune_core",
                     description="FedPrune-Sparse: federated learning with client-side pruning "
                                 "and sparsified updates with error feedback.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="Run one experiment and write its artifacts.",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--params", action="append", metavar="FILE.yaml",
                     help="YAML parameter file (repeatable; later files and flags win).")
    add_config_flags(run)
    nb = sub.add_parser("notebook", help="Run one experiment through the experiment notebook "
                        "(papermill); the executed notebook is saved in the run folder.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    nb.add_argument("--params", action="append", metavar="FILE.yaml",
                    help="YAML parameter file (repeatable; later files and flags win).")
    nb.add_argument("--report", choices=("html", "pdf"), help="Also export a report.")
    add_config_flags(nb)
    nb.set_defaults(handler=cmd_notebook)
    params = sub.add_parser("notebook-params", help="Print the experiment notebook's "
                            "parameters cell, generated from ExperimentConfig (`make notebooks` "
                            "writes it).")
    params.set_defaults(handler=cmd_notebook_params)
    from .deploy.launch import add_deploy_flags, cmd_deploy  # neither flwr nor torch

    deploy = sub.add_parser("deploy", help="Run one experiment on a Flower deployment (a "
                            "SuperLink and --nodes SuperNodes here, or --superlink): the same "
                            "run folder as `run`.",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    deploy.add_argument("--params", action="append", metavar="FILE.yaml",
                        help="YAML parameter file (repeatable; later files and flags win).")
    add_config_flags(deploy)
    add_deploy_flags(deploy)
    deploy.set_defaults(handler=cmd_deploy)
    from .tools.batch import add_batch_commands

    add_batch_commands(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return cmd_run(args)
        return args.handler(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileExistsError as err:  # RunExistsError, RunLockedError: a folder not ours to touch
        from .run.artifacts import RunExistsError

        if not isinstance(err, RunExistsError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C outside a run: while importing, checking, exiting
        return interrupted(err)


def cmd_run(args) -> int:
    from .data.loading import DataUnavailableError
    from .fl.training import DivergenceError
    from .run.artifacts import RunExistsError, default_run_name

    cfg = config_from_args(args)  # validates before any data is touched
    from .run.loop import run_experiment

    if cfg.run_name is None:  # named here, so that an interruption can say what it left
        cfg = cfg.replace(run_name=default_run_name())
    try:
        run_experiment(cfg)
    except RunExistsError as err:  # also RunLockedError: another process holds the folder
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DataUnavailableError as err:  # missing or malformed data: the input's fault
        print(f"error: data_root: {err}", file=sys.stderr)
        return 2
    except DivergenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        return interrupted(err, Path(cfg.results_dir) / cfg.run_name)
    except OSError as err:  # a full disk, a folder removed under the run
        print(f"error: results_dir: writing {err.filename or cfg.results_dir} failed: "
              f"{err.strerror or err}; the last finished round's checkpoint is kept (free space, "
              f"then rerun with --resume)", file=sys.stderr)
        return 2
    return 0


def interrupted(err: KeyboardInterrupt, run_dir: Optional[Path] = None) -> int:
    """Ctrl-C (130) or SIGTERM (143): one line saying what is left (the run has logged where it
    stopped). By the class name, not an import: Ctrl-C may have cut an import short."""
    terminated = type(err).__name__ == "Terminated"
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    if run_dir is not None and (run_dir / "checkpoint.pt").exists():
        print(f"{how}: the last finished round's checkpoint is kept; rerun with --resume",
              file=sys.stderr)
    else:
        print(f"{how}: stopped before a round finished; nothing to resume", file=sys.stderr)
    return 128 + (getattr(err, "signum", 2) if terminated else 2)


def cmd_notebook(args) -> int:
    from .run.artifacts import RunExistsError, default_run_name
    from .tools.notebook import execute_experiment, finished_run

    cfg = config_from_args(args)
    if args.report == "pdf":  # a bad PDF setting is found now, not after the run
        from .tools.reports import pdf_timeout

        pdf_timeout()
    if cfg.run_name is None:  # named here, so that an interruption can say what it left
        cfg = cfg.replace(run_name=default_run_name())
    out = finished_run(cfg)  # a ConfigError if the finished run has other parameters
    if out is not None:
        print(f"{out.parent} is already finished with these parameters; skipping it "
              f"(--overwrite or FORCE=1 to redo it)")
    else:
        import logging

        import papermill

        # Stream the kernel's round lines to the terminal while the notebook records them.
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        out_dir = Path(cfg.results_dir) / cfg.run_name
        try:
            out = execute_experiment(cfg, log_output=True)
        except RunExistsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except papermill.PapermillExecutionError as err:
            print(f"error: the experiment notebook failed: {err.ename}: {err.evalue}",
                  file=sys.stderr)
            return 2 if err.ename in ("ConfigError", "RunExistsError", "RunLockedError") else 1
        except KeyboardInterrupt as err:
            return interrupted(err, out_dir)
        except OSError as err:  # papermill could not write the notebook: a full disk
            print(f"error: results_dir: writing {err.filename or out_dir} failed: "
                  f"{err.strerror or err}", file=sys.stderr)
            return 2
        print(f"executed notebook: {out}")
    if args.report:
        from .tools.reports import ReportError, export_reports

        try:
            paths = export_reports([out], fmt=args.report)
        except ReportError as err:  # the run is kept; only its report is missing
            print(f"error: --report: {err}", file=sys.stderr)
            return 1
        for path in paths:
            print(f"report: {path}")
    return 0


def cmd_notebook_params(args) -> int:
    from .tools.notebook import parameters_source

    print(parameters_source())
    return 0


