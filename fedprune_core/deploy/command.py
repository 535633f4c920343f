"""`python -m fedprune_core deploy`: its flags, their validation, and the command (launch.py
runs the deployment). Importing this module needs neither flwr nor torch: the CLI builds its
parser from it."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..checks import check_results_dir
from ..errors import CommandError, ConfigError, Terminated, exit_status
from ..flags import config_from_args

DEFAULT_NODES = 4
ISOLATIONS = ("process", "subprocess")


def add_deploy_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("deployment (Flower SuperLink and SuperNodes)")
    group.add_argument("--nodes", type=int, default=DEFAULT_NODES, metavar="N",
                       help="SuperNodes; node i hosts the clients whose id %% N == i.")
    group.add_argument("--isolation", choices=ISOLATIONS,
                       help="How the local SuperNodes run their ClientApp (Flower's --isolation): "
                            "'process' (default): one long-lived executor per node runs every "
                            "message (executor.py); 'subprocess': Flower starts a ClientApp "
                            "process per message, which hands it to the node's worker.")
    group.add_argument("--superlink", metavar="HOST:PORT",
                       help="Submit to this running SuperLink (its SuperNodes run elsewhere, "
                            "started with node-index/num-nodes) instead of starting one and the "
                            "nodes here.")
    group.add_argument("--tls", action="store_true",
                       help="The local deployment over TLS, with SuperNode authentication: a CA, "
                            "the SuperLink's certificate and one key pair per SuperNode are made "
                            "in the run's .deploy folder; only the registered SuperNodes may "
                            "connect.")
    group.add_argument("--root_certificates", metavar="CA.pem",
                       help="With --superlink: the CA certificate of its TLS (without it the "
                            "connection is insecure).")
    group.add_argument("--state_dir", metavar="DIR",
                       help="Where the local SuperNodes keep their clients' residuals and "
                            "ratios (DIR/node-i); default: RESULTS_DIR/.deploy/RUN_NAME.")
    group.add_argument("--round_timeout", type=float, default=3600.0, metavar="SEC",
                       help="Replies not in this many seconds after a round's broadcast count as "
                            "missing (a round with none fails); 0 = wait for every reply or for "
                            "Flower to declare its node gone.")
    group.add_argument("--node_wait", type=float, default=600.0, metavar="SEC",
                       help="How long the server waits for every SuperNode before round 1.")
    group.add_argument("--kill_node", metavar="INDEX:ROUND",
                       help="Fault injection: SIGKILL SuperNode INDEX while its first client of "
                            "round ROUND trains.")
    group.add_argument("--crash_after_round", type=int, default=0, metavar="ROUND",
                       help="Fault injection: the ServerApp dies once round ROUND's replies are "
                            "in, before aggregating or saving it (then rerun with --resume).")


@dataclass(frozen=True)
class Options:
    nodes: int
    isolation: str
    superlink: Optional[str]
    tls: bool
    root_certificates: Optional[str]
    state_dir: Optional[str]
    round_timeout: float
    node_wait: float
    kill_node: Optional[tuple[int, int]]
    crash_after_round: int

    @classmethod
    def from_args(cls, args) -> "Options":
        def bad(name: str, value, allowed: str) -> ConfigError:
            return ConfigError(f"{name}: {value!r} is not allowed; allowed: {allowed}")

        if args.nodes < 1:
            raise bad("nodes", args.nodes, "an int >= 1")
        for name in ("round_timeout", "node_wait"):
            value = getattr(args, name)
            if not (value >= 0 and value < float("inf")):
                raise bad(name, value, "seconds >= 0")
        if args.superlink is not None and not parse_address(args.superlink):
            raise bad("superlink", args.superlink, "HOST:PORT")
        kill = None
        if args.kill_node:
            match = re.fullmatch(r"(\d+):(\d+)", args.kill_node)
            if not match or int(match[1]) >= args.nodes or int(match[2]) < 1:
                raise bad("kill_node", args.kill_node, f"INDEX:ROUND with INDEX < {args.nodes}")
            kill = (int(match[1]), int(match[2]))
        if args.superlink and (kill or args.state_dir or args.isolation):
            raise ConfigError("kill_node, state_dir, isolation: only for the nodes this command "
                              "starts (not with --superlink)")
        if args.root_certificates and not args.superlink:
            raise ConfigError("root_certificates: only with --superlink (the local SuperLink "
                              "runs on 127.0.0.1 without TLS)")
        if args.crash_after_round < 0:
            raise bad("crash_after_round", args.crash_after_round, "a round >= 1 (0: off)")
        if args.tls and args.superlink:
            raise ConfigError("tls: only for the SuperLink and SuperNodes this command starts "
                              "(with --superlink, pass its CA as --root_certificates)")
        return cls(args.nodes, args.isolation or ISOLATIONS[0], args.superlink, args.tls,
                   args.root_certificates, args.state_dir, args.round_timeout, args.node_wait,
                   kill, args.crash_after_round)


def cmd_deploy(args) -> int:
    cfg = config_from_args(args)  # validated before anything starts
    opts = Options.from_args(args)
    from . import launch  # the flower extra's packages (flwr's tomli_w): only to deploy

    try:
        launch.check_flower()
    except CommandError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    if cfg.run_name is None:
        cfg = cfg.replace(run_name=dt.datetime.now().strftime("run_%Y%m%d_%H%M%S"))
    if opts.superlink is None:  # the ServerApp runs here: paths as this shell means them
        from ..data.files import resolve_data_root  # no torch

        cfg = cfg.replace(results_dir=str(Path(cfg.results_dir).expanduser().resolve()),
                          data_root=str(resolve_data_root(cfg.data_root).resolve()))
        check_results_dir(cfg.results_dir)
    previous = signal.signal(signal.SIGTERM, _terminate)
    deployment = launch.Deployment(cfg, opts)
    try:
        return deployment.run()
    except (CommandError, KeyboardInterrupt) as err:  # every process here is stopped by now
        status, line = exit_status(err, Path(cfg.results_dir) / cfg.run_name)
        if isinstance(err, KeyboardInterrupt) and opts.superlink is not None:
            line = (f"interrupted: no longer following run {deployment.run_id or '(not started)'}"
                    f", which goes on at the SuperLink {opts.superlink} (`flwr stop` stops it)")
        print(line, file=sys.stderr)
        return status
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame):
    raise Terminated(signum)




def parse_address(text: str) -> Optional[tuple[str, int]]:
    """(host, port) of HOST:PORT (an IPv6 host in brackets), or None."""
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", text.strip())
    if not match or not 0 < int(match[2]) < 65536:
        return None
    return match[1], int(match[2])
