"""Command line: `python -m fedprune_core run [--params FILE.yaml] [--flag value ...]`.

Every flag is generated from ExperimentConfig (flags.py); every failure a user can act on ends
with one line and the exit status errors.exit_status gives it, whichever command it came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from .deploy.command import add_deploy_flags, cmd_deploy  # neither flwr nor torch
from .errors import exit_status, status_of_name
from .flags import Parser, add_config_flags, add_params_flag, config_from_args, \
    parse_command_line
from .tools.batch import add_batch_commands


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fedprune_core",
                    description="FedPrune-Sparse: federated learning with client-side pruning "
                                "and sparsified updates with error feedback.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = sub.add_parser("run", help="Run one experiment and write its artifacts.")
    add_params_flag(run)
    add_config_flags(run)
    run.set_defaults(handler=cmd_run)
    nb = sub.add_parser("notebook", help="Run one experiment through the experiment notebook "
                        "(papermill); the executed notebook is saved in the run folder.")
    add_params_flag(nb)
    nb.add_argument("--report", choices=("html", "pdf"), help="Also export a report.")
    add_config_flags(nb)
    nb.set_defaults(handler=cmd_notebook)
    params = sub.add_parser("notebook-params", help="Print the experiment notebook's "
                            "parameters cell, generated from ExperimentConfig (`make notebooks` "
                            "writes it).")
    params.set_defaults(handler=cmd_notebook_params)
    deploy = sub.add_parser("deploy", help="Run one experiment on a Flower deployment (a "
                            "SuperLink and --nodes SuperNodes here, or --superlink): the same "
                            "run folder as `run`.")
    add_params_flag(deploy)
    add_config_flags(deploy)
    add_deploy_flags(deploy)
    deploy.set_defaults(handler=cmd_deploy)
    add_batch_commands(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = parse_command_line(build_parser(), argv)
        return args.handler(args)
    except (Exception, KeyboardInterrupt) as err:  # Ctrl-C while importing, checking, exiting
        return report(err)


def report(err: BaseException, run_dir: Optional[Path] = None) -> int:
    """Print the error's one line and return its exit status; a bug is re-raised (its
    traceback is what a bug report needs). `run_dir`: what an interruption left behind."""
    known = exit_status(err, run_dir)
    if known is None:
        raise err
    print(known[1], file=sys.stderr)
    return known[0]


def cmd_run(args) -> int:
    # torch's import (seconds) only once the command line is known to be valid
    from .data.files import check_data
    from .run.artifacts import default_run_name, finished_same
    from .run.loop import run_experiment

    cfg = config_from_args(args)  # validates before any data is touched
    check_data(cfg.dataset, cfg.data_root)  # the inputs first, then the run folder
    if cfg.run_name is None:  # named here, so that an interruption can say what it left
        cfg = cfg.replace(run_name=default_run_name())
    if finished_same(cfg) is not None:  # as make run, notebook and batches do
        print(f"{Path(cfg.results_dir) / cfg.run_name} is already finished with these "
              f"parameters; skipping it (--overwrite to redo it)")
        return 0
    try:
        run_experiment(cfg)
    except (Exception, KeyboardInterrupt) as err:
        return report(err, Path(cfg.results_dir) / cfg.run_name)
    return 0


def cmd_notebook(args) -> int:
    from .data.files import check_data  # no torch here: the kernel does the work
    from .run.artifacts import default_run_name
    from .tools.notebook import execute_experiment, finished_run

    cfg = config_from_args(args)
    if args.report == "pdf":  # a bad PDF setting is found now, not after the run
        from .tools.reports import pdf_timeout

        pdf_timeout()
    check_data(cfg.dataset, cfg.data_root)  # the inputs first, then the run folder
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
        try:
            out = execute_experiment(cfg, log_output=True)
        except papermill.PapermillExecutionError as err:  # the kernel's error, by its name
            print(f"error: the experiment notebook failed: {err.ename}: {err.evalue}",
                  file=sys.stderr)
            return status_of_name(err.ename)
        except (Exception, KeyboardInterrupt) as err:
            return report(err, Path(cfg.results_dir) / cfg.run_name)
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


