"""The new models' costs, and what each reproduce table costs on 2 CPU cores and on one GPU.
`python benchmarks/models.py [--quick] [--out FILE]` prints JSON (and writes it to --out).

Per model (PreResNet-18 at width 1 and HeteroFL's e = 1/16, FjORD's ResNet-18, LEAF's CNN, and
McMahan's CNN for the McMahan table): parameters, training FLOPs a sample (the table's
ModelSpec.train_flops_per_sample: 6 per multiply-accumulate, norms and additions not counted),
and measured training samples/s on this CPU at the batch size of its reproduce files:
`fl.training.train` (the sequential engine) on 1 and 2 intra-op threads, two clients side by
side on one thread each (the parallel engine, the default, on 2 cores), and `fl.cohort`'s
train_cohort (4 clients) on 1 and 2 threads; plus evaluation samples/s (`fl.evaluate.predict`,
batch 128, 2 one-thread workers). Synthetic data (pixels cost what real ones do), best of a few
warm calls; the load average at start and end is recorded: the machine is shared, so compare
ratios more than absolute rates.

Table estimates (`estimate`): every run of params/reproduce/<paper>/ (times its seeds, 3 for
FjORD), as configured: training samples = rounds x clients a round x local epochs x samples a
client at each client's width (width levels spread evenly; FjORD's steps draw a width uniformly
up to the client's p_max, plus the p_max teacher with self-distillation), evaluation = every
eval_every rounds the test set (10,000) and, with batch norm, the pass over the clients'
training data (50,000), and at the tail evaluations the same again at every deployed width.
McMahan's rows stop at 99% (target_accuracy): their paper rounds (350, 229, 173) and their
limits bound the estimate. CPU: FLOPs / the measured GFLOP/s on 2 cores (training: the parallel
engine's; evaluation: predict's). GPU (none lent: an assumption, stated in GPU_ASSUMPTION):
every local step (the cohort engine: all clients of a round at once) takes max(FLOPs / the
sustained rate, a per-step launch floor), evaluation batches likewise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from fedprune_core.checks import parse_levels  # noqa: E402
from fedprune_core.config import ExperimentConfig  # noqa: E402
from fedprune_core.data.catalog import DATASETS  # noqa: E402
from fedprune_core.data.loading import TensorDataset  # noqa: E402
from fedprune_core.fl.cohort import CohortJob, train_cohort  # noqa: E402
from fedprune_core.fl.evaluate import predict  # noqa: E402
from fedprune_core.models.plan import kept_units  # noqa: E402
from fedprune_core.fl.threads import one_thread_pool  # noqa: E402
from fedprune_core.fl.training import RoundTraining, train  # noqa: E402
from fedprune_core.models.net import (ParamLayout, TableNet, init_flat_params,  # noqa: E402
                                      model_from_flat)
from fedprune_core.models.zoo import model_spec  # noqa: E402
from fedprune_core.rng import torch_generator  # noqa: E402

# (name, model, dataset, width, batch size of its reproduce files)
MODELS = [("preresnet18", "preresnet18", "cifar10", 1.0, 10),
          ("preresnet18_e", "preresnet18", "cifar10", 0.0625, 10),
          ("resnet18", "resnet18", "cifar10", 1.0, 32),
          ("leaf_cnn", "leaf_cnn", "femnist", 1.0, 10),
          ("mcmahan_cnn", "mcmahan_cnn", "mnist", 1.0, 10),
          ("heterofl_conv", "heterofl_conv", "mnist", 1.0, 10),
          ("heterofl_conv_c", "heterofl_conv", "mnist", 0.25, 10),
          ("heterofl_conv_e", "heterofl_conv", "mnist", 0.0625, 10)]
PAPER_SEEDS = {"mcmahan": 1, "heterofl": 1, "heterofl_mnist": 1, "fjord": 3}
MCMAHAN_PAPER_ROUNDS = {1: 350, 5: 229, 20: 173}
# One H200, float32 with cuDNN's TF32 convolutions (torch's default), not measured here: the
# sustained rate of ResNet-18-size convnets at batches of 10-300 samples is a small fraction of
# the 495 TFLOP/s dense TF32 peak (an A100 trains CIFAR ResNet-18 at about 5,000-6,000 images/s
# = 17-20 TFLOP/s with mixed precision at batch 256, 6-12% of its peak; an H100-class GPU
# 1.5-2x that). Assumed: 25 TFLOP/s for training and evaluation, and a floor of 0.1 ms of
# kernel launches per table row a training step (forward, backward, SGD; PyTorch eager, about
# 10 us per launch and 10 launches a row) and 0.03 ms per row an evaluation batch.
GPU_ASSUMPTION = {"sustained_tflops": 25.0, "step_floor_ms_per_row": 0.1,
                  "eval_batch_floor_ms_per_row": 0.03, "eval_batch": 128}


def _data(n: int, info, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randint(0, 256, (n, info.channels, info.image_size,
                                                info.image_size), dtype=torch.uint8, generator=g),
                         torch.randint(0, info.num_classes, (n,), generator=g))


def _best(fn, repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_model(model: str, dataset: str, width: float, batch: int, samples: int,
                  repeats: int) -> dict:
    info = DATASETS[dataset]
    spec = model_spec(model, info, width)
    flat = init_flat_params(spec, 0)
    hp = RoundTraining(lr=0.01, local_epochs=1, batch_size=batch)
    data = _data(samples, info)
    out = {"parameters": ParamLayout(spec).size, "rows": len(spec.layers),
           "train_flops_per_sample": spec.train_flops_per_sample(),
           "forward_flops_per_sample": 2 * spec.forward_macs(), "batch_size": batch,
           "samples": samples}

    def sequential():
        train(model_from_flat(spec, flat), data, info, hp, torch_generator(0, "batches", 0, 0))

    half = _data(samples // 2, info, 1)

    def parallel():  # the parallel engine's way: clients side by side, one thread each
        pool = one_thread_pool(2)
        list(pool.map(lambda k: train(model_from_flat(spec, flat), half, info, hp,
                                      torch_generator(0, "batches", 0, k)), range(2)))
        pool.shutdown()

    quarter = [_data(samples // 4, info, k) for k in range(4)]
    template = TableNet(spec)

    def cohort():
        jobs = [CohortJob(flat, None, d, torch_generator(0, "batches", 0, k))
                for k, d in enumerate(quarter)]
        train_cohort(template, jobs, hp, info)

    test = _data(256, info, 2)

    def evaluation():
        predict(flat, spec, test, info, 128, workers=2)

    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[f"sequential_{threads}t_samples_per_sec"] = samples / _best(sequential, repeats)
        out[f"cohort_{threads}t_samples_per_sec"] = samples / _best(cohort, repeats)
    torch.set_num_threads(before)
    out["parallel_2w_samples_per_sec"] = 2 * (samples // 2) / _best(parallel, repeats)
    out["eval_2w_samples_per_sec"] = 256 / _best(evaluation, repeats)
    best_train = max(out["parallel_2w_samples_per_sec"], out["sequential_2t_samples_per_sec"])
    out["cpu_train_gflops_2cores"] = best_train * spec.train_flops_per_sample() / 1e9
    out["cpu_eval_gflops_2cores"] = out["eval_2w_samples_per_sec"] * 2 * spec.forward_macs() / 1e9
    # Two free cores: the parallel engine's two one-thread clients at the one-thread rate each
    # (on a shared machine the measured two-core rates are what is left to this process).
    free = 2 * out["sequential_1t_samples_per_sec"] / best_train
    out["cpu_train_gflops_2free"] = free * out["cpu_train_gflops_2cores"]
    out["cpu_eval_gflops_2free"] = free * out["cpu_eval_gflops_2cores"]
    out["cohort_over_sequential_1t"] = (out["cohort_1t_samples_per_sec"]
                                        / out["sequential_1t_samples_per_sec"])
    return out


# --- the tables ----------------------------------------------------------------------------

def _width_spec(spec, ratio: float):
    return spec.with_widths({g: kept_units(w, ratio) for g, w in spec.widths.items()})


def _client_ratios(cfg: ExperimentConfig) -> list[float]:
    if cfg.pruning_levels:
        return list(parse_levels(cfg.pruning_levels))
    return [cfg.pruning_ratio if cfg.pruning_mode == "structured" else 0.0]


def run_cost(cfg: ExperimentConfig) -> dict:
    """Training and evaluation FLOPs and local steps of one run as configured."""
    info = DATASETS[cfg.dataset]
    spec = model_spec(cfg.model, info, cfg.model_width, cfg.model_norm)
    rounds = cfg.rounds
    if cfg.target_accuracy is not None and cfg.model == "mcmahan_cnn":
        rounds = MCMAHAN_PAPER_ROUNDS.get(cfg.local_epochs, rounds)
    per_client = cfg.data_fraction * info.train_size / cfg.num_clients
    step_flops = []  # training FLOPs a sample, one per client width (spread evenly)
    for ratio in _client_ratios(cfg):
        sub = _width_spec(spec, ratio)
        if cfg.local_training == "fjord":  # a drawn width up to p_max, the teacher with KD
            p_max = 1.0 - ratio
            ps = [k / cfg.fjord_levels for k in range(1, cfg.fjord_levels + 1)
                  if k / cfg.fjord_levels < p_max - 1e-9] + [p_max]
            drawn = sum(_width_spec(spec, 1.0 - p).train_flops_per_sample() for p in ps) / len(ps)
            step_flops.append(drawn + (sub.train_flops_per_sample() if cfg.fjord_distill else 0))
        else:
            step_flops.append(sub.train_flops_per_sample())
    per_sample = sum(step_flops) / len(step_flops)
    samples = rounds * cfg.clients_per_round * cfg.local_epochs * per_client
    steps = rounds * cfg.local_epochs * math.ceil(per_client / cfg.batch_size)  # cohort steps
    evals = math.ceil(rounds / cfg.eval_every)
    norm_pass = 0.0
    if any(layer.kind == "bn" for layer in spec.layers):  # static batch norm's pass
        norm_pass = info.train_size * cfg.data_fraction
        if 0 < cfg.norm_stats_samples < norm_pass:
            norm_pass = cfg.norm_stats_samples
    test = 10_000 if cfg.test_samples == 0 else cfg.test_samples
    forward = 2 * spec.forward_macs()
    eval_samples_full = evals * (test + norm_pass)
    widths = sorted(set(_client_ratios(cfg)) - {0.0}) if cfg.pruning_mode == "structured" else []
    tail = min(cfg.tail_rounds, evals) if cfg.width_eval == "tail" else (
        evals if cfg.width_eval == "every" else 0)
    eval_flops = eval_samples_full * forward + sum(
        tail * (test + norm_pass) * 2 * _width_spec(spec, r).forward_macs() for r in widths)
    eval_samples = eval_samples_full + tail * (test + norm_pass) * len(widths)
    return {"rounds": rounds, "train_flops": samples * per_sample, "train_samples": samples,
            "cohort_steps": steps, "eval_flops": eval_flops, "eval_samples": eval_samples,
            "rows": len(spec.layers),
            "distill": cfg.local_training == "fjord" and cfg.fjord_distill,
            "spec_key": (cfg.model, cfg.model_width)}


def measured_as(model: str, width: float) -> str:
    """The measured model (MODELS) whose speed a run of `model` at `width` is estimated with:
    the same model at the nearest measured width."""
    return min((name for name, m, _, _, _ in MODELS if m == model),
               key=lambda name: abs(next(w for n, _, _, w, _ in MODELS if n == name) - width))


def estimate(paper: str, rates: dict) -> dict:
    """Wall-time estimates of `make reproduce PAPER=paper` (all its files and seeds)."""
    files = sorted(p for p in (REPO / "params" / "reproduce" / paper).glob("*.yaml")
                   if not p.name.startswith("_"))
    seeds = PAPER_SEEDS[paper]
    gpu = GPU_ASSUMPTION
    rows, cpu_total, free_total, gpu_total = [], 0.0, 0.0, 0.0
    for path in files:
        cfg = ExperimentConfig.from_yaml(path)
        cost = run_cost(cfg)
        rate = rates[measured_as(*cost["spec_key"])]
        cpu, free = ((cost["train_flops"] / (rate[f"cpu_train_gflops_{k}"] * 1e9)
                      + cost["eval_flops"] / (rate[f"cpu_eval_gflops_{k}"] * 1e9))
                     for k in ("2cores", "2free"))
        floor = gpu["step_floor_ms_per_row"] * cost["rows"] * 1e-3 * (2 if cost["distill"] else 1)
        step_flops = cost["train_flops"] / cost["cohort_steps"]
        gpu_train = cost["cohort_steps"] * max(step_flops / (gpu["sustained_tflops"] * 1e12),
                                               floor)
        batches = cost["eval_samples"] / gpu["eval_batch"]
        gpu_eval = batches * max(cost["eval_flops"] / batches / (gpu["sustained_tflops"] * 1e12),
                                 gpu["eval_batch_floor_ms_per_row"] * cost["rows"] * 1e-3)
        rows.append({"file": path.name, "rounds": cost["rounds"], "seeds": seeds,
                     "train_pflop": cost["train_flops"] / 1e15,
                     "eval_pflop": cost["eval_flops"] / 1e15,
                     "cpu_2cores_hours": seeds * cpu / 3600,
                     "cpu_2free_cores_hours": seeds * free / 3600,
                     "gpu_hours": seeds * (gpu_train + gpu_eval) / 3600})
        cpu_total += seeds * cpu
        free_total += seeds * free
        gpu_total += seeds * (gpu_train + gpu_eval)
    return {"runs": rows, "cpu_2cores_hours": cpu_total / 3600,
            "cpu_2cores_days": cpu_total / 86400, "cpu_2free_cores_days": free_total / 86400,
            "gpu_hours": gpu_total / 3600}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, 1 repeat")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--estimate-from", type=Path,
                        help="re-estimate the tables from a previous run's JSON (no measuring)")
    args = parser.parse_args(argv)
    samples, repeats = (64, 1) if args.quick else (args.samples, args.repeats)
    out = {"load_avg_start": os.getloadavg()[0], "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "gpu_assumption": GPU_ASSUMPTION, "models": {}}
    if args.estimate_from:
        out = {**json.loads(args.estimate_from.read_text()), "gpu_assumption": GPU_ASSUMPTION}
    for name, model, dataset, width, batch in ([] if args.estimate_from else MODELS):
        n = samples if width < 1 or model in ("leaf_cnn", "mcmahan_cnn") else max(
            32, samples // 2)
        out["models"][name] = measure_model(model, dataset, width, batch, n, repeats)
        print(name, json.dumps(out["models"][name]), file=sys.stderr, flush=True)
    for rates in out["models"].values():  # older JSON: the free-core rates from its own
        free = 2 * rates["sequential_1t_samples_per_sec"] / max(
            rates["parallel_2w_samples_per_sec"], rates["sequential_2t_samples_per_sec"])
        rates.setdefault("cpu_train_gflops_2free", free * rates["cpu_train_gflops_2cores"])
        rates.setdefault("cpu_eval_gflops_2free", free * rates["cpu_eval_gflops_2cores"])
    out["tables"] = {paper: estimate(paper, out["models"]) for paper in PAPER_SEEDS}
    out.setdefault("load_avg_end", os.getloadavg()[0])
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return out


if __name__ == "__main__":
    main()
