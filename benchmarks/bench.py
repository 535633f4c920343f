"""Speed and memory benchmark of FedPrune-Sparse: `make bench` (or python benchmarks/bench.py).

Measures, in one run on one machine, and writes to results/bench/bench.json:
  - a large float32 matmul's GFLOP/s and a large oneDNN convolution's (MKL's sgemm may not use
    a CPU's widest vector units, and on AMD it need not be fast at all): the machine's ceiling
    is the faster of the two, measured in the same run;
  - local training samples/s and GFLOP/s of the full and a 40%-structured-pruned SimpleCNN
    (exact widths, and rounded to multiples of 8 and of 16 as `width_multiple` does) through
    the core's own `fl.training.train` (FLOPs: ModelSpec.train_flops_per_sample);
  - evaluation of the 10k test set through `fl.evaluate.evaluate`, and a layout ablation
    (NCHW vs channels-last, ReLU before vs after pooling, two batch sizes);
  - client updates/s (broadcast + `fl.client.local_update`) for each method;
  - the first- vs second-call cost of new structured sub-model shapes;
  - 2 intra-op threads in one process vs two 1-thread processes side by side;
  - the default run (`make run`'s parameters, the parallel engine; also on the sequential
    engine, the previous default) and the FedAvg baseline end to end, each in its own process,
    against their compute floor (training FLOPs at the ceiling plus one 10k evaluation per
    evaluated round), with the time split into training, the rest of the client updates,
    evaluation, diagnostics, checkpoints and the rest (benchmarks/scale.py);
    the seed-like reference (benchmarks/naive_reference.py) runs the default beside them, and
    Flower 1.42's simulation engine the FedAvg baseline (benchmarks/flower_reference.py);
  - the default run on both engines alone and beside CPU-bound processes, against its fair
    share of the busy machine (benchmarks/busy.py);
  - checkpoint bytes and seconds per round and peak memory of 20, 1,000 and 10,000-client
    federations with error feedback;
  - both training engines' samples/s at batch 10 and 64 (benchmarks/engines.py).

Timings are the best of a few warm calls. On a loaded machine they are contended: the load
average at start and end is recorded beside them, and CPU seconds beside wall seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

from common import (available_cores, in_process, load_avg, measure, peak_rss_mb,  # noqa: E402
                    result_of)
import busy  # noqa: E402
import engines  # noqa: E402
import scale  # noqa: E402
from fedprune_core.config import ExperimentConfig  # noqa: E402
from fedprune_core.data.catalog import DATASETS  # noqa: E402
from fedprune_core.data.loading import TensorDataset, load_dataset, normalize  # noqa: E402
from fedprune_core.fl import wire  # noqa: E402
from fedprune_core.fl.client import local_update  # noqa: E402
from fedprune_core.fl.evaluate import evaluate  # noqa: E402
from fedprune_core.models.plan import Plan, full_plan, kept_units  # noqa: E402
from fedprune_core.fl.state import ClientState  # noqa: E402
from fedprune_core.fl.systems import make_profiles  # noqa: E402
from fedprune_core.fl.training import train  # noqa: E402
from fedprune_core.fl.types import ClientSlot  # noqa: E402
from fedprune_core.models.net import ParamLayout, init_flat_params, model_from_flat  # noqa: E402
from fedprune_core.models.table import ModelSpec  # noqa: E402
from fedprune_core.models.zoo import model_spec  # noqa: E402
from fedprune_core.rng import torch_generator  # noqa: E402
from fedprune_core.run.federation import build_setup, build_training  # noqa: E402

DATASET = "mnist"
INFO = DATASETS[DATASET]
MODEL = "simple_cnn"
METHODS = {  # name -> (config changes, client pruning ratio)
    "dense": (dict(pruning_mode="none", sparsify_method="none"), 0.0),
    "unstructured": (dict(pruning_mode="unstructured", pruning_ratio=0.5,
                          sparsify_method="none"), 0.5),
    "structured": (dict(pruning_mode="structured", pruning_ratio=0.4,
                        sparsify_method="none"), 0.4),
    "topk": (dict(pruning_mode="none", sparsify_method="topk", sparsity_ratio=0.95), 0.0),
    "cost_weighted": (dict(pruning_mode="none", sparsify_method="cost_weighted",
                           sparsity_ratio=0.95), 0.0),
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    matmul_n: int
    matmul_repeats: int
    conv_batch: int
    train_samples: int
    train_repeats: int
    eval_repeats: int
    eval_images: int
    update_samples: int
    update_repeats: int
    first_call_ratios: tuple
    experiment: dict  # changes to the default run for the floor experiments
    federations: tuple  # (num_clients, clients_per_round) for checkpoints and memory
    federation: dict  # changes for those runs
    engine_samples: int  # per client, for the engines' samples/s
    engine_repeats: int
    busy: dict  # changes to the default run for the busy-machine runs


FULL = Sizes(matmul_n=2048, matmul_repeats=5, conv_batch=16, train_samples=3000, train_repeats=3,
             eval_repeats=3, eval_images=10_000, update_samples=3000, update_repeats=3,
             first_call_ratios=(0.30, 0.35, 0.45, 0.55), experiment={},
             federations=((20, 10), (1000, 200), (10_000, 200)),
             federation=dict(rounds=3, eval_every=3), engine_samples=600, engine_repeats=3,
             busy=dict(rounds=3))
QUICK = Sizes(matmul_n=512, matmul_repeats=3, conv_batch=2, train_samples=256, train_repeats=1,
              eval_repeats=1, eval_images=1000, update_samples=256, update_repeats=1,
              first_call_ratios=(0.30, 0.55),
              experiment=dict(rounds=1, num_clients=4, clients_per_round=2, local_epochs=1,
                              data_fraction=0.02, test_samples=300),
              federations=((20, 10), (200, 20)),
              federation=dict(rounds=2, eval_every=2, data_fraction=0.05, local_epochs=1,
                              test_samples=200),
              engine_samples=32, engine_repeats=1,
              busy=dict(rounds=1, num_clients=4, clients_per_round=2, local_epochs=1,
                        data_fraction=0.02))


# --- helpers ------------------------------------------------------------------------------------

def spec_full() -> ModelSpec:
    return model_spec(MODEL, INFO)


def spec_pruned(ratio: float, multiple: int = 1) -> ModelSpec:
    full = spec_full()
    return full.with_widths({g: kept_units(w, ratio, multiple) for g, w in full.widths.items()})


# the sub-models whose training speed is measured, as (label, pruning ratio, width multiple):
# full, 40%-structured at exact widths, and the same rounded to multiples of 8 and 16
# (`width_multiple`: oneDNN blocks channels by 8 in its AVX2 kernels, by 16 in its AVX-512 ones)
TRAINED_SPECS = {"full": ("full", 0.0, 1),
                 "pruned40": ("40% structured", 0.4, 1),
                 "pruned40_x8": ("40% structured, widths x8", 0.4, 8),
                 "pruned40_x16": ("40% structured, widths x16", 0.4, 16)}


def subset(data: TensorDataset, n: int) -> TensorDataset:
    return TensorDataset(data.images[:n].contiguous(), data.labels[:n].contiguous())


def bench_config(**changes) -> ExperimentConfig:
    return ExperimentConfig(**{"model": MODEL, "local_epochs": 1, "progress": "off",
                               "adaptive_ratio": False, **changes})


class BenchClient:
    """Client 0 holding `data`, updated again and again from the global vector `flat` at
    `ratio`; its state (error-feedback residual) carries from one update to the next."""

    def __init__(self, cfg: ExperimentConfig, flat: torch.Tensor, layout: ParamLayout,
                 data: TensorDataset, ratio: float):
        # the deadline only matters to the online ratio policy
        self.setup = build_setup(cfg, layout, deadline=float("inf"))
        self.flat = flat
        self.planner = self.setup.extractor.for_round(layout, flat, 1)
        self.dense = full_plan(layout, flat.device)
        self.slot = ClientSlot(0, data, make_profiles(cfg)[0])
        self.state = ClientState(ratio)

    def plan(self) -> Plan:
        """The downlink plan, as fl.round.run_round picks it."""
        if self.setup.extractor.kind == "structured":
            return self.planner.plan(self.state.ratio)
        return self.dense

    def broadcast(self, plan: Plan) -> bytes:
        return wire.encode(plan, 0, 0, self.flat[plan.coords])

    def update(self, round_idx: int, down: bytes) -> None:
        _, self.state = local_update(self.setup, self.slot, round_idx, down, self.planner,
                                     self.state)


# --- pieces -------------------------------------------------------------------------------------

def matmul_gflops(n: int, repeats: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / measure(lambda: torch.mm(a, b), repeats)["wall_sec"] / 1e9


def conv_gflops(batch: int, repeats: int) -> float:
    """A large oneDNN 3x3 convolution (256 -> 256 channels, 32x32, channels-last): a second
    ceiling, since MKL's sgemm may not use a CPU's widest vector units (it does not on AMD)."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 256, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        sec = measure(lambda: conv(x), repeats)["wall_sec"]
    return 2 * batch * 32 * 32 * 256 * 256 * 9 / sec / 1e9


def train_throughput(spec: ModelSpec, data: TensorDataset, repeats: int) -> dict:
    """Samples/s of one local epoch through fl.training.train (best of `repeats`); per CPU
    second too, which a time-shared machine disturbs less (at one thread)."""
    hp = build_training(bench_config()).for_round(1)
    flat = init_flat_params(spec, 0)
    calls = itertools.count()

    def once():
        model = model_from_flat(spec, flat.clone())  # a copy: training writes through
        train(model, data, INFO, hp, torch_generator(0, "bench", next(calls)))

    m = measure(once, repeats)
    rate = len(data) / m["wall_sec"]
    return {"samples_per_sec": rate, "gflops_per_sec": rate * spec.train_flops_per_sample() / 1e9,
            "samples_per_cpu_sec": len(data) / m["cpu_sec"]}


def eval_measure(flat: torch.Tensor, spec: ModelSpec, test: TensorDataset, batch: int,
                 repeats: int) -> dict:
    """fl.evaluate.evaluate on `test`, scaled to 10k images."""
    m = measure(lambda: evaluate(flat, spec, test, INFO, batch), repeats)
    return scale_to_10k(m, len(test))


def scale_to_10k(m: dict, n: int) -> dict:
    return {k: (v * 10_000 / n if k != "minor_faults" else int(v * 10_000 / n))
            for k, v in m.items()}


def eval_layout_ablation(test: TensorDataset, repeats: int) -> dict:
    """10k-image evaluation (wall, CPU, page faults) by memory layout and op order, at
    batch 128 and 1000: a plain forward on pre-normalised images."""
    from naive_reference import NaiveCNN

    spec = spec_full()
    flat = init_flat_params(spec, 0)
    layout = ParamLayout(spec)
    net = NaiveCNN(tuple(spec.widths.values()))
    net.load_state_dict({s.name: flat[s.slice].view(s.shape) for s in layout})
    net.eval()

    def forward(x, pool_first):
        for conv in (net.conv1, net.conv2):
            x = F.relu(F.max_pool2d(conv(x), 2)) if pool_first else F.max_pool2d(F.relu(conv(x)), 2)
        return net.fc2(F.relu(net.fc1(x.flatten(1))))

    x_all = normalize(test.images, INFO).contiguous()  # NCHW float
    out = {}
    for channels_last in (False, True):
        net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for pool_first in (False, True):
            for batch in (128, 1000):
                def run():
                    with torch.inference_mode():
                        for i in range(0, len(x_all), batch):
                            x = x_all[i:i + batch]
                            if channels_last:
                                x = x.contiguous(memory_format=torch.channels_last)
                            forward(x, pool_first)
                key = (f"{'channels_last' if channels_last else 'nchw'}_"
                       f"{'pool_relu' if pool_first else 'relu_pool'}_batch{batch}")
                out[key] = scale_to_10k(measure(run, repeats), len(x_all))
    return out


def naive_eval_seconds(images: int, repeats: int) -> float:
    """The seed-like evaluation (PIL transforms, DataLoader batch 1000, NCHW), scaled to 10k."""
    import naive_reference

    _, test_ds = naive_reference.mnist_datasets(bench_config())
    test_ds = torch.utils.data.Subset(test_ds, range(images))
    net = naive_reference.NaiveCNN()
    sec = measure(lambda: naive_reference.evaluate(net, test_ds), repeats)["wall_sec"]
    return sec * 10_000 / images


def client_update_rates(flat, layout, data, repeats: int) -> dict:
    """Client updates/s (the broadcast's encoding + local_update) per method, warm, best of
    `repeats`."""
    rates = {}
    for name, (changes, ratio) in METHODS.items():
        bench_client = BenchClient(bench_config(**changes), flat, layout, data, ratio)
        calls = itertools.count()

        def once():
            down = bench_client.broadcast(bench_client.plan())
            bench_client.update(next(calls), down)

        rates[name] = 1.0 / measure(once, repeats)["wall_sec"]
    return rates


def first_call_costs(flat, layout, data, ratios) -> dict:
    """Seconds of the first, second and third local_update of never-seen sub-model shapes."""
    cfg = bench_config(pruning_mode="structured", sparsify_method="none")
    out = {}
    for ratio in ratios:
        bench_client = BenchClient(cfg, flat, layout, data, ratio)
        plan = bench_client.plan()
        times = []
        for call in range(3):
            down = bench_client.broadcast(plan)
            start = time.perf_counter()
            bench_client.update(call, down)
            times.append(time.perf_counter() - start)
        out[f"{ratio:.2f}"] = {"widths": list(plan.spec.widths.values()), "first_sec": times[0],
                               "second_sec": times[1], "third_sec": times[2],
                               "extra_sec": times[0] - min(times[1:])}
    return out


def _train_worker(threads: int, samples: int, data_root, barrier, queue) -> None:
    """A process that trains the full model on `threads` threads; reports samples/s."""
    torch.set_num_threads(threads)
    train_set, _ = load_dataset(DATASET, data_root)
    data = subset(train_set, samples)
    spec = spec_full()
    flat = init_flat_params(spec, 0)
    hp = build_training(bench_config()).for_round(1)
    train(model_from_flat(spec, flat.clone()), subset(train_set, 256), INFO, hp,
          torch_generator(0, "warmup"))
    barrier.wait()
    start = time.time()
    train(model_from_flat(spec, flat.clone()), data, INFO, hp, torch_generator(0, "bench2"))
    queue.put((start, time.time()))


def two_processes(samples: int, data_root) -> float:
    """Samples/s of two 1-thread processes training side by side: both processes' samples
    over the span from the first start to the last finish."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_train_worker, args=(1, samples, data_root, barrier, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    spans = [result_of(queue, procs, "two 1-thread processes") for _ in procs]
    for p in procs:
        p.join()
    return len(procs) * samples / (max(e for _, e in spans) - min(s for s, _ in spans))


def _naive_worker(cfg_dict: dict, threads: int, queue) -> None:
    """The seed-like reference experiment (benchmarks/naive_reference.py) in a fresh process."""
    import naive_reference

    torch.set_num_threads(threads)
    baseline = peak_rss_mb()
    out = naive_reference.run(ExperimentConfig.from_dict(cfg_dict))
    queue.put({**out, "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": baseline})


def profile_tables(flat, layout, data, test) -> dict:
    """Top ops (self CPU time) of one hybrid client update and of one evaluation."""
    from torch.profiler import ProfilerActivity, profile

    cfg = bench_config(pruning_mode="structured", sparsify_method="cost_weighted")
    bench_client = BenchClient(cfg, flat, layout, data, 0.4)
    plan = bench_client.plan()

    def update():
        bench_client.update(0, bench_client.broadcast(plan))

    def evaluation():
        evaluate(flat, layout.spec, test, INFO, cfg.eval_batch_size)

    tables = {}
    for name, fn in (("client_update", update), ("evaluation", evaluation)):
        fn()  # warm
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        averages = prof.key_averages()
        print(f"\n--- profile: {name} (top ops by self CPU time) ---")
        print(averages.table(sort_by="self_cpu_time_total", row_limit=12))
        top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        tables[name] = {e.key: round(e.self_cpu_time_total / 1e3, 2) for e in top}  # ms
    return tables


def _flower_worker(cfg_dict: dict, queue) -> None:
    """FedAvg on Flower's simulation engine (benchmarks/flower_reference.py), own process."""
    import flower_reference

    baseline = peak_rss_mb()
    out = flower_reference.run(ExperimentConfig.from_dict(cfg_dict))
    queue.put({**out, "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": baseline})


def experiments(sizes: Sizes, threads: int, runs_dir: Path, ceiling_gflops: float,
                eval_10k_sec: float, full_training_gflops: float, note,
                skip: tuple = ()) -> dict:
    """The default run (`make run`'s parameters: the parallel engine) and the previous default
    (the sequential engine on `threads` intra-op threads) and the FedAvg baseline end to end,
    each against its compute floor with its time split; beside them, in the same run, the
    seed-like reference on the default run and Flower 1.42's simulation engine on FedAvg."""
    common = dict(sizes.experiment, progress="off", results_dir=str(runs_dir), overwrite=True,
                  num_threads=threads)
    configs = {"default": ExperimentConfig(**common, run_name="bench_default"),
               "default_sequential": ExperimentConfig(**common, engine="sequential",
                                                      run_name="bench_default_sequential"),
               "fedavg": ExperimentConfig.from_yaml(
                   REPO / "params" / "ablations" / "baseline_fedavg.yaml",
                   overrides={**common, "run_name": "bench_fedavg"})}
    out = {"experiment_config": {k: v for k, v in configs["default"].to_dict().items()
                                 if k in ("rounds", "num_clients", "clients_per_round",
                                          "local_epochs", "data_fraction")}}
    for name, cfg in configs.items():
        run = scale.run_experiment(cfg, threads)
        out[f"floor_{name}"] = scale.floor(run, ceiling_gflops, eval_10k_sec,
                                           full_training_gflops)
        note(f"  {name}: {run['wall_sec']:.1f} s, {out[f'floor_{name}']['over_floor_x']:.2f}x "
             f"its floor")
    naive = in_process(_naive_worker, (configs["default"].to_dict(), threads), "naive reference")
    note(f"  naive reference: {naive['wall_sec']:.1f} s")
    out["naive_default"] = {k: naive[k] for k in ("wall_sec", "rounds_sec", "final_accuracy_pct",
                                                   "peak_rss_mb", "rss_after_imports_mb")}
    out["speedup_over_naive_x"] = naive["wall_sec"] / out["floor_default"]["wall_sec"]
    out["rss_over_naive_x"] = out["floor_default"]["peak_rss_mb"] / naive["peak_rss_mb"]
    out["parallel_speedup_x"] = (out["floor_default_sequential"]["wall_sec"]
                                 / out["floor_default"]["wall_sec"])
    if "flower" not in skip:
        flower = in_process(_flower_worker, (configs["fedavg"].to_dict(),), "Flower reference")
        note(f"  Flower simulation, FedAvg: {flower['wall_sec']:.1f} s")
        out["flower_fedavg"] = flower
        out["fedavg_speedup_over_flower_x"] = (flower["wall_sec"]
                                               / out["floor_fedavg"]["wall_sec"])
    return out


def federations(sizes: Sizes, threads: int, runs_dir: Path, note) -> dict:
    """Checkpoint bytes and seconds per round and peak memory of the default method (error
    feedback on) with more and more clients."""
    out = {}
    for clients, per_round in sizes.federations:
        cfg = ExperimentConfig(**sizes.federation, num_clients=clients,
                               clients_per_round=per_round, progress="off", overwrite=True,
                               results_dir=str(runs_dir), run_name=f"bench_{clients}_clients",
                               num_threads=threads)
        out[str(clients)] = {"clients_per_round": per_round,
                             **scale.checkpoint_figures(scale.run_experiment(cfg, threads))}
        note(f"  {clients} clients: {out[str(clients)]['checkpoint_mb_per_round']:.1f} MB "
             f"checkpoint a round, peak RSS {out[str(clients)]['peak_rss_mb']:.0f} MB")
    return out


# --- the run ------------------------------------------------------------------------------------

def machine_info(threads: int) -> dict:
    import torchvision

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": dt.datetime.now().isoformat(timespec="seconds"),
            "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
            "python_version": platform.python_version(), "platform": platform.platform(),
            "cpu_model": cpu, "cpu_count": os.cpu_count(), "cores_available": available_cores(),
            "threads": threads, "mkldnn": torch.backends.mkldnn.is_available(),
            "load_avg_1min_start": load_avg()}


def run(args) -> dict:
    sizes = QUICK if args.quick else FULL
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    out_path = Path(args.out)
    res: dict = {"quick": args.quick, "machine": machine_info(threads),
                 "load_avg_1min_by_section": {}}

    def note(msg):
        res["load_avg_1min_by_section"][msg.strip()] = load_avg()
        print(f"[bench {time.perf_counter() - t0:6.1f}s] {msg} (load {load_avg():.2f})",
              flush=True)

    t0 = time.perf_counter()
    load = res["machine"]["load_avg_1min_start"]
    note(f"{threads} thread(s); load average {load:.2f} on {available_cores()} core(s)")
    if load >= 1.0:
        print("WARNING: the machine is busy, so timings are contended; with more threads than "
              "idle cores, OpenMP's barriers make multi-threaded runs many times slower",
              flush=True)
    start = time.perf_counter()
    train_set, test = load_dataset(DATASET, None)
    res["data_load_sec"] = time.perf_counter() - start

    note("matmul ceiling")
    res["matmul_n"] = sizes.matmul_n
    res["matmul_gflops_per_sec"] = matmul_gflops(sizes.matmul_n, sizes.matmul_repeats)
    res["conv_gflops_per_sec"] = conv_gflops(sizes.conv_batch, sizes.matmul_repeats)
    # the floor must not flatter a run: the faster kernel sets it
    res["ceiling_gflops_per_sec"] = max(res["matmul_gflops_per_sec"], res["conv_gflops_per_sec"])

    note("local training throughput")
    data = subset(train_set, sizes.train_samples)
    res["train_samples"] = sizes.train_samples
    for key, (_, ratio, multiple) in TRAINED_SPECS.items():
        spec = spec_pruned(ratio, multiple)
        t = train_throughput(spec, data, sizes.train_repeats)
        res[f"train_{key}_samples_per_sec"] = t["samples_per_sec"]
        res[f"train_{key}_gflops_per_sec"] = t["gflops_per_sec"]
        res[f"train_{key}_pct_of_matmul"] = 100 * t["gflops_per_sec"] / res["matmul_gflops_per_sec"]
        res[f"train_{key}_pct_of_conv"] = 100 * t["gflops_per_sec"] / res["conv_gflops_per_sec"]
        res[f"train_{key}_flops_per_sample"] = spec.train_flops_per_sample()
        res[f"train_{key}_widths"] = list(spec.widths.values())

    note("intra-op threads vs processes")
    for n in (1, 2):
        torch.set_num_threads(n)
        t = train_throughput(spec_full(), data, sizes.train_repeats)
        res[f"train_full_samples_per_sec_{n}thread"] = t["samples_per_sec"]
        res[f"train_full_samples_per_cpu_sec_{n}thread"] = t["samples_per_cpu_sec"]
    torch.set_num_threads(threads)
    res["train_full_samples_per_sec_2proc_1thread_total"] = two_processes(
        sizes.train_samples, None)

    note("evaluation")
    spec = spec_full()
    layout = ParamLayout(spec)
    flat = init_flat_params(spec, 0)
    eval_batch = ExperimentConfig().eval_batch_size
    eval_set = subset(test, sizes.eval_images)
    res["eval_images"] = len(eval_set)
    res["eval_batch_size"] = eval_batch
    by_batch = {str(b): eval_measure(flat, spec, eval_set, b, sizes.eval_repeats)
                for b in sorted({64, eval_batch, 256, 512, 1000})}
    res["eval_10k_sec"] = by_batch[str(eval_batch)]["wall_sec"]
    res["eval_samples_per_sec"] = 10_000 / res["eval_10k_sec"]
    res["eval_10k_sec_by_batch"] = {b: m["wall_sec"] for b, m in by_batch.items()}
    res["eval_10k_by_batch_detail"] = by_batch
    res["eval_naive_10k_sec"] = naive_eval_seconds(len(eval_set), sizes.eval_repeats)
    ablation = eval_layout_ablation(eval_set, sizes.eval_repeats)
    res["eval_layout_ablation_10k_sec"] = {k: m["wall_sec"] for k, m in ablation.items()}
    res["eval_layout_ablation_detail"] = ablation

    note("client updates per method")
    udata = subset(train_set, sizes.update_samples)
    res["client_update_samples"] = sizes.update_samples
    res["client_updates_per_sec"] = client_update_rates(flat, layout, udata, sizes.update_repeats)

    note("first call of new sub-model shapes")
    res["first_call"] = first_call_costs(flat, layout, udata, sizes.first_call_ratios)
    res["first_call_max_extra_sec"] = max(v["extra_sec"] for v in res["first_call"].values())

    if args.profile:
        note("profiling")
        res["profile_self_cpu_ms"] = profile_tables(flat, layout, udata, test)

    runs_dir = out_path.parent / "runs"
    note("experiments against their floor, and the seed-like reference (own processes)")
    res.update(experiments(sizes, threads, runs_dir, res["ceiling_gflops_per_sec"],
                           res["eval_10k_sec"], res["train_full_gflops_per_sec"], note,
                           args.skip))

    if "busy" not in args.skip:
        note("a busy machine: the default run beside CPU-bound processes (own processes)")
        res["busy"] = busy.run(dict(sizes.busy, progress="off", results_dir=str(runs_dir),
                                    overwrite=True), threads)

    note("checkpoints and memory by federation size (own processes)")
    res["federations"] = federations(sizes, threads, runs_dir, note)

    note("training engines: sequential vs cohort (samples/s)")
    res["engines"] = engines.run(clients=10, samples=sizes.engine_samples,
                                 repeats=sizes.engine_repeats, batch_sizes=[10, 64])

    res["peak_rss_mb"] = peak_rss_mb()
    res["machine"]["load_avg_1min_end"] = load_avg()
    res["machine"]["contended"] = load >= 1.0  # other work was running when the bench began
    res["bench_wall_sec"] = time.perf_counter() - t0
    return res


def table(res: dict) -> str:
    m = res["machine"]
    rows = [
        ("machine", f"{m['cpu_model']}, {m['cores_available']} cores, {m['threads']} threads, "
                    f"torch {m['torch_version']}"),
        ("load average (1 min) start / end",
         f"{m['load_avg_1min_start']:.2f} / {m['load_avg_1min_end']:.2f}"
         + ("  (CONTENDED: other work was running)" if m["contended"] else "")),
        (f"matmul {res['matmul_n']}^2 float32", f"{res['matmul_gflops_per_sec']:.1f} GFLOP/s"),
        ("conv 3x3 256->256 32x32 (oneDNN)", f"{res['conv_gflops_per_sec']:.1f} GFLOP/s"),
        ("ceiling (the faster of the two)", f"{res['ceiling_gflops_per_sec']:.1f} GFLOP/s"),
    ]
    for key, (label, *_) in TRAINED_SPECS.items():
        widths = "/".join(map(str, res[f"train_{key}_widths"]))
        rows.append((f"train {label} SimpleCNN ({widths})",
                     f"{res[f'train_{key}_samples_per_sec']:,.0f} samples/s, "
                     f"{res[f'train_{key}_gflops_per_sec']:.1f} GFLOP/s "
                     f"({res[f'train_{key}_pct_of_matmul']:.0f}% of matmul, "
                     f"{res[f'train_{key}_pct_of_conv']:.0f}% of conv)"))
    rows += [
        ("train full: 1 thread / 2 threads",
         f"{res['train_full_samples_per_sec_1thread']:,.0f} / "
         f"{res['train_full_samples_per_sec_2thread']:,.0f} samples/s (per CPU-s: "
         f"{res['train_full_samples_per_cpu_sec_1thread']:,.0f} / "
         f"{res['train_full_samples_per_cpu_sec_2thread']:,.0f})"),
        ("train full: two 1-thread processes",
         f"{res['train_full_samples_per_sec_2proc_1thread_total']:,.0f} samples/s in total"),
        (f"evaluate 10k (fl.evaluate, batch {res['eval_batch_size']})",
         f"{res['eval_10k_sec']:.3f} s ({res['eval_samples_per_sec']:,.0f} samples/s)"),
        ("evaluate 10k, seed-like (PIL + DataLoader, batch 1000, NCHW)",
         f"{res['eval_naive_10k_sec']:.3f} s"),
        ("evaluate 10k by batch (wall / CPU s, page faults)", ""),
    ]
    for b, m in res["eval_10k_by_batch_detail"].items():
        rows.append((f"  batch {b}", f"{m['wall_sec']:.3f} / {m['cpu_sec']:.3f} s "
                                     f"(sys {m['sys_sec']:.2f}), {m['minor_faults']:,} faults"))
    rows.append(("forward 10k by layout (wall / CPU s, page faults)", ""))
    for key, m in res["eval_layout_ablation_detail"].items():
        rows.append((f"  {key}", f"{m['wall_sec']:.3f} / {m['cpu_sec']:.3f} s "
                                 f"(sys {m['sys_sec']:.2f}), {m['minor_faults']:,} faults"))
    rows.append((f"client updates ({res['client_update_samples']} samples, 1 epoch)", ""))
    for name, rate in res["client_updates_per_sec"].items():
        rows.append((f"  {name}", f"{rate:.2f} updates/s ({1 / rate:.2f} s each)"))
    rows.append(("first call of a new sub-model shape", ""))
    for ratio, v in res["first_call"].items():
        rows.append((f"  ratio {ratio} widths {tuple(v['widths'])}",
                     f"first {v['first_sec']:.2f} s, then {v['second_sec']:.2f} / "
                     f"{v['third_sec']:.2f} s (extra {v['extra_sec']:+.2f} s)"))
    rows += experiment_rows(res)
    rows += [
        ("peak RSS of this process", f"{res['peak_rss_mb']:.0f} MB"),
        ("bench wall time", f"{res['bench_wall_sec']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def experiment_rows(res: dict) -> list[tuple[str, str]]:
    """The floor, the split, the seed-like reference, checkpoints, memory and engines."""
    e = res["experiment_config"]
    rows = [(f"experiments ({e['rounds']} rounds, {e['num_clients']} clients, "
             f"{e['clients_per_round']}/round, {e['local_epochs']} epochs)", "")]
    for name in ("default", "default_sequential", "fedavg"):
        f = res[f"floor_{name}"]
        split = ", ".join(f"{k} {v:.1f}" for k, v in f["split_sec"].items())
        rows += [(f"  {name}: wall / floor", f"{f['wall_sec']:.1f} s / {f['floor_sec']:.1f} s "
                                             f"= {f['over_floor_x']:.2f}x; "
                                             f"{f['over_practical_floor_x']:.2f}x at the full "
                                             f"model's training speed, whose floor "
                                             f"({f['practical_floor_sec']:.1f} s) is "
                                             f"{f['practical_floor_sec'] / f['floor_sec']:.2f}x "
                                             f"the ceiling's (tail accuracy "
                                             f"{f['tail_accuracy_pct']:.2f}%)"),
                 (f"  {name}: split (s)", split)]
    rows.append(("  default (parallel engine) over the sequential engine",
                 f"{res['parallel_speedup_x']:.2f}x faster"))
    naive = res["naive_default"]
    rows.append(("  seed-like reference, default run", f"{naive['wall_sec']:.1f} s: the default "
                 f"run is {res['speedup_over_naive_x']:.2f}x faster; peak RSS "
                 f"{res['floor_default']['peak_rss_mb']:.0f} MB against its "
                 f"{naive['peak_rss_mb']:.0f} MB"))
    flower = res.get("flower_fedavg")
    if flower:
        rows.append(("  Flower 1.42 simulation engine, FedAvg", f"{flower['wall_sec']:.1f} s: "
                     f"the suite's FedAvg is {res['fedavg_speedup_over_flower_x']:.2f}x faster"))
    busy = res.get("busy")
    if busy:
        rows.append((f"busy machine: default run beside {busy['hogs']} CPU-bound processes", ""))
        for name, b in busy["runs"].items():
            rows.append((f"  {name}", f"quiet {b['quiet_sec']:.1f} s, busy {b['busy_sec']:.1f} s"
                                      f" = {b['over_fair_share_x']:.2f}x its fair share "
                                      f"({b['fair_share_sec']:.1f} s)"))
    rows.append(("federations (checkpoint a round, store commit a round, peak RSS)", ""))
    for clients, f in res["federations"].items():
        rows.append((f"  {clients} clients, {f['clients_per_round']}/round",
                     f"{f['checkpoint_mb_per_round']:.1f} MB in {f['checkpoint_sec_per_round']:.2f}"
                     f" s, {f['store_commit_mb_per_round']:.1f} MB in "
                     f"{f['store_commit_sec_per_round']:.2f} s, {f['peak_rss_mb']:.0f} MB"))
    rows.append(("engines (samples/s, sequential / cohort)", ""))
    for key, v in res["engines"].items():
        if isinstance(v, dict):
            rows.append((f"  {key}", f"{v['sequential_samples_per_sec']:,.0f} / "
                                     f"{v['cohort_samples_per_sec']:,.0f}"))
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--skip", nargs="*", default=(), choices=("flower", "busy"),
                        help="leave out Flower's simulation (needs the flower extra; Ray's "
                             "start-up alone takes ~30 s) or the busy-machine runs")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default 0 = all available cores)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "bench.json"),
                        help="where bench.json goes (experiment runs go beside it in runs/)")
    parser.add_argument("--profile", action="store_true",
                        help="print the top ops of one client update and one evaluation")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    res = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print()
    print(table(res))
    print(f"\nWritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
