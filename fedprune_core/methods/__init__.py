"""Methods, one module each, in four kinds (see registry.py):

- extract/    which sub-model or mask a client trains (none, l1, first, rolex, magnitude)
- compress/   how a client's update is compressed and how its values go on the wire
              (none, topk, random, cost_weighted, stc, qsgd)
- aggregate/  how the server combines the updates, with its own state (fedavg, fedavgm)
- ratio/      each client's pruning ratio over the rounds (none, fixed, warm_start, online)
"""

from .registry import build, names, register

__all__ = ["build", "names", "register"]
