"""FedAvg on Flower 1.42's simulation engine, written as Flower's PyTorch template writes an app
(`flwr new --framework pytorch`: a `ClientApp` whose `@app.train()` loads the received arrays,
trains with a torchvision dataset through a DataLoader, and replies with its arrays and
`num-examples`; a `ServerApp` whose `main` runs `flwr.serverapp.strategy.FedAvg.start` with a
centralised `evaluate_fn`), on the task `make bench` times for this suite: SimpleCNN on MNIST,
the suite's own shards partition and initial weights for the seed, `num_clients` SuperNodes,
`clients_per_round` trained a round, `local_epochs` epochs of SGD at `batch_size` and `lr`,
the global model evaluated on the 10k test images after every round.

What it measures is what a researcher gets from Flower's simulation engine with its template,
not the best that could be done inside Flower: the suite's data path (uint8 tensors in memory,
channels-last, pooling before ReLU) is the suite's, and the template's is a DataLoader with
per-sample ToTensor/Normalize. Each Ray actor gets one CPU and one torch thread (the setting
that does not oversubscribe the cores). `pip install -e '.[flower]'`; `make bench` installs it.
"""

from __future__ import annotations

import logging
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

class Net(nn.Module):
    """SimpleCNN as a plain nn.Module, as the template defines its `Net`."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


_DATA: dict = {}


def _datasets(data_root: str):
    """torchvision MNIST with the template's transforms, loaded once per process."""
    if data_root not in _DATA:
        from torchvision import datasets, transforms

        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,),
                                                                             (0.3081,))])
        _DATA[data_root] = tuple(datasets.MNIST(data_root, train=t, download=True, transform=tf)
                                 for t in (True, False))
    return _DATA[data_root]


def _partition(cfg) -> list[list[int]]:
    """The suite's partition for this seed (of `data_fraction` of the training set, as
    run.federation draws it): every client sees the samples it sees there."""
    from fedprune_core.data.loading import load_dataset, partition, subsample

    train, _ = load_dataset(cfg.dataset, cfg.data_root)
    keep = subsample(train.labels, cfg.data_fraction, cfg.seed)
    parts = partition(train.labels[keep], cfg.partition, cfg.num_clients, cfg.seed,
                      classes_per_client=cfg.classes_per_client, alpha=cfg.dirichlet_alpha)
    return [keep[p].tolist() for p in parts]


def client_app(settings: dict):
    """The ClientApp; `settings` (plain values) travel with it to the simulation's workers."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from torch.utils.data import DataLoader, Subset

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context):
        torch.set_num_threads(1)
        model = Net()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        indices = settings["parts"][int(context.node_config["partition-id"])]
        trainset, _ = _datasets(settings["data_root"])
        loader = DataLoader(Subset(trainset, indices), batch_size=settings["batch_size"],
                            shuffle=True)
        opt = torch.optim.SGD(model.parameters(), lr=settings["lr"])
        model.train()
        for _ in range(settings["local_epochs"]):
            for images, labels in loader:
                opt.zero_grad()
                F.cross_entropy(model(images), labels).backward()
                opt.step()
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": len(indices)})})
        return Message(content=content, reply_to=msg)

    return app


def server_app(cfg, result: dict):
    from flwr.app import ArrayRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from torch.utils.data import DataLoader

    from fedprune_core.models.net import init_flat_params, model_from_flat
    from fedprune_core.models.zoo import model_spec
    from fedprune_core.data.catalog import DATASETS

    app = ServerApp()

    def evaluate(round_idx: int, arrays: ArrayRecord) -> MetricRecord:
        model = Net()
        model.load_state_dict(arrays.to_torch_state_dict())
        model.eval()
        _, testset = _datasets(str(cfg.data_root))
        correct = total = 0
        with torch.no_grad():
            for images, labels in DataLoader(testset, batch_size=cfg.eval_batch_size):
                correct += (model(images).argmax(1) == labels).sum().item()
                total += len(labels)
        accuracy = 100.0 * correct / total
        result.setdefault("accuracy", []).append(accuracy)
        result.setdefault("round_end", []).append(time.perf_counter())
        return MetricRecord({"accuracy": accuracy})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        # the suite's initial weights for the seed, so both start from the same model
        spec = model_spec(cfg.model, DATASETS[cfg.dataset])
        start = model_from_flat(spec, init_flat_params(spec, cfg.seed)).state_dict()
        start = {k: v.contiguous() for k, v in start.items()}
        strategy = FedAvg(fraction_train=cfg.clients_per_round / cfg.num_clients,
                          fraction_evaluate=0.0, min_train_nodes=cfg.clients_per_round,
                          min_available_nodes=cfg.num_clients)
        out = strategy.start(grid=grid, initial_arrays=ArrayRecord(start),
                             num_rounds=cfg.rounds, evaluate_fn=evaluate)
        result["trained_rounds"] = len(out.train_metrics_clientapp)

    return app


def run(cfg) -> dict:
    """FedAvg of `cfg` (an ExperimentConfig) on Flower's simulation engine: wall seconds,
    per-round seconds and test accuracies."""
    from flwr.simulation import run_simulation

    from fedprune_core.data.files import resolve_data_root

    logging.getLogger("flwr").setLevel(logging.WARNING)
    cfg = cfg.replace(data_root=str(resolve_data_root(cfg.data_root)))
    # Ray's workers unpickle the ClientApp, which lives in this module: they must find it
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here,
                                                             os.environ.get("PYTHONPATH")]))
    result: dict = {}
    start = time.perf_counter()
    settings = {"data_root": cfg.data_root, "batch_size": cfg.batch_size, "lr": cfg.lr,
                "local_epochs": cfg.local_epochs, "parts": _partition(cfg)}
    run_simulation(server_app=server_app(cfg, result), client_app=client_app(settings),
                   num_supernodes=cfg.num_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": _cores(), "log_to_driver": False,
                                                 "include_dashboard": False}})
    wall = time.perf_counter() - start
    if result.get("trained_rounds") != cfg.rounds:  # failed ClientApps are only logged
        raise RuntimeError(f"Flower trained {result.get('trained_rounds')} of {cfg.rounds} "
                           f"rounds: its ClientApps failed (see the log above)")
    ends = [start] + result.get("round_end", [])[1:]
    return {"wall_sec": wall, "accuracy_pct": result["accuracy"][1:],
            "initial_accuracy_pct": result["accuracy"][0], "trained_rounds": cfg.rounds,
            "rounds_sec": [b - a for a, b in zip(ends, ends[1:])]}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


if __name__ == "__main__":  # one whole process, for benchmarks/side_by_side.py
    import argparse
    import json

    from fedprune_core.config import ExperimentConfig

    parser = argparse.ArgumentParser(description="FedAvg on Flower's simulation engine")
    parser.add_argument("--params", required=True)
    parser.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(run(ExperimentConfig.from_yaml(args.params,
                                                    overrides={"rounds": args.rounds}))))
