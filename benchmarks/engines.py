"""Samples/s of the two client-training engines (`engine` in the configuration): sequential
`training.train`, one client after another, against the cohort engine
(`fl.cohort.train_cohort`), all clients in one batched computation.
`python benchmarks/engines.py [--quick]` prints JSON.

Per device (the CPU, and CUDA when torch sees it) and batch size (10 and 64): `clients` dense
SimpleCNN clients with `samples` synthetic MNIST-shaped samples each train one local epoch
from the same start; samples/s = all clients' samples / wall seconds (best of `repeats` warm
calls). Synthetic pixels cost what real ones cost. On a time-shared machine the numbers are
contended: the load average at start and end is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from fedprune_core.config import ExperimentConfig
from fedprune_core.data.catalog import DATASETS
from fedprune_core.data.loading import TensorDataset
from fedprune_core.fl.cohort import CohortJob, train_cohort
from fedprune_core.fl.training import RoundTraining, train
from fedprune_core.models.net import TableNet, init_flat_params, model_from_flat
from fedprune_core.models.zoo import model_spec
from fedprune_core.rng import torch_generator

INFO = DATASETS["mnist"]
DEFAULT = ExperimentConfig()
SPEC = model_spec(DEFAULT.model, INFO)  # the default model (SimpleCNN)


def synthetic_clients(clients: int, samples: int, device: str) -> list[TensorDataset]:
    g = torch.Generator().manual_seed(0)
    return [TensorDataset(
        torch.randint(0, 256, (samples, 1, 28, 28), dtype=torch.uint8, generator=g).to(device),
        torch.randint(0, 10, (samples,), generator=g).to(device)) for _ in range(clients)]


def best_seconds(fn, repeats: int, device: str) -> float:
    """The fastest of `repeats` calls after one warm-up (which also builds CUDA kernels)."""
    def timed():
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        return time.perf_counter() - start
    timed()
    return min(timed() for _ in range(repeats))


def engine_rates(device: str, batch_size: int, clients: int, samples: int,
                 repeats: int) -> dict:
    """Samples/s of each engine on `device`, and cohort / sequential."""
    hp = RoundTraining(lr=DEFAULT.lr, momentum=DEFAULT.momentum,
                       local_epochs=1, batch_size=batch_size)
    datas = synthetic_clients(clients, samples, device)
    start = init_flat_params(SPEC, 0).to(device)
    template = TableNet(SPEC).to(device)

    def sequential():
        for k, data in enumerate(datas):
            train(model_from_flat(SPEC, start, device), data, INFO, hp,
                  torch_generator(0, "batches", 0, k))

    def cohort():
        jobs = [CohortJob(start, None, data, torch_generator(0, "batches", 0, k))
                for k, data in enumerate(datas)]
        train_cohort(template, jobs, hp, INFO)

    total = clients * samples * hp.local_epochs
    rates = {name: total / best_seconds(fn, repeats, device)
             for name, fn in (("sequential", sequential), ("cohort", cohort))}
    return {"sequential_samples_per_sec": rates["sequential"],
            "cohort_samples_per_sec": rates["cohort"],
            "cohort_over_sequential": rates["cohort"] / rates["sequential"]}


def run(clients: int, samples: int, repeats: int, batch_sizes: list[int]) -> dict:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = {"clients": clients, "samples_per_client": samples, "repeats": repeats,
           "threads": torch.get_num_threads(), "load_avg_start": os.getloadavg()[0],
           "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    for device in devices:
        for b in batch_sizes:
            out[f"{device}_b{b}"] = engine_rates(device, b, clients, samples, repeats)
    out["load_avg_end"] = os.getloadavg()[0]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--samples", type=int, default=600, help="samples per client")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="64 samples per client, 1 repeat")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    samples, repeats = (64, 1) if args.quick else (args.samples, args.repeats)
    result = run(args.clients, samples, repeats, args.batch_sizes)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
