"""The suite on real machines: a Flower app of every method (Beutel et al. 2020, "Flower: A
Friendly Federated Learning Framework").

A SuperLink runs the ServerApp (server_app.py), which runs the simulation's own loop
(`run.loop.run_experiment`) with one step replaced: a round's client updates come back from the
SuperNodes hosting the sampled clients instead of from local threads (one message a node a
round, sent as soon as the last round is aggregated). Each SuperNode runs the ClientApp
(client_app.py), which runs the simulation's own client update (`fl.client.local_update`) and
keeps its clients' residuals and ratios on the node (node_state.py): in the node's long-lived
executor (executor.py, Flower's process isolation) or, under subprocess isolation, handed by a
thin ClientApp process to the node's worker (worker.py). `python -m fedprune_core deploy`
(launch.py) starts a SuperLink and N SuperNodes on this machine, runs one experiment and stops
them all.

Importing this package (and launch.py) needs neither flwr nor torch; the apps need both.
"""

from ..errors import DeploymentError

__all__ = ["DeploymentError"]
