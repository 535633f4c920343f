"""The one local step (fl/training.py: step_loss + sgd_update) and the round's settings, resolved
once in fl.client.prepare: an lr schedule trains every engine at each round's lr, step by step;
sgd_update is torch.optim.SGD's arithmetic, mask, clipping and weight decay included."""

import math

import pandas as pd
import pytest
import torch

from fedprune_core.fl import cohort as cohort_engine
from fedprune_core.fl import training
from fedprune_core.fl.training import LocalTraining, RoundTraining, sgd_update
from fedprune_core.run.loop import run_experiment

SCHEDULE = dict(lr=0.04, lr_milestones="1,2", lr_gamma=0.5, rounds=3)
LR_OF_ROUND = {1: 0.04, 2: 0.02, 3: 0.01}


def _recording(monkeypatch) -> list[float]:
    """Every call of the one SGD step, by every engine, records the lr it stepped with."""
    seen, step = [], training.sgd_update

    def recorded(params, grads, bufs, hp, masks=None, active=None):
        seen.append(hp.lr)
        return step(params, grads, bufs, hp, masks, active)
    monkeypatch.setattr(training, "sgd_update", recorded)
    monkeypatch.setattr(cohort_engine, "sgd_update", recorded)
    return seen


def _steps(clients: pd.DataFrame, batch: int, epochs: int, cohort: bool) -> dict[int, int]:
    """Local steps of each round: every client's, or the cohort's (one step for all)."""
    per_client = clients.assign(steps=epochs * (clients.num_samples / batch).apply(math.ceil))
    by_round = per_client.groupby("round")["steps"]
    return (by_round.max() if cohort else by_round.sum()).to_dict()


@pytest.mark.parametrize("engine", ["sequential", "parallel", "cohort"])
def test_an_lr_schedule_trains_every_step_of_every_engine_at_its_rounds_lr(
        tiny_config, monkeypatch, engine):
    seen = _recording(monkeypatch)
    cfg = tiny_config(engine=engine, num_threads=2 if engine == "parallel" else 1,
                      run_name=engine, **SCHEDULE)
    result = run_experiment(cfg)
    steps = _steps(result.clients, cfg.batch_size, cfg.local_epochs, engine == "cohort")
    expected = [LR_OF_ROUND[r] for r in sorted(steps) for _ in range(steps[r])]
    assert seen == pytest.approx(expected)  # every step, in order: round 1's, 2's, then 3's
    assert len(set(seen)) == 3


def test_an_lr_schedule_trains_every_step_of_a_deployment_node_at_its_rounds_lr(
        tiny_config, monkeypatch, tmp_path):
    """The deployment's path, in this process: every client's task of every round goes through
    deploy.node.run_task (what a SuperNode's worker runs: the task's experiment parameters, the
    node's own federation and client state) and comes back as the ServerApp reads it."""
    from fedprune_core.deploy import node, protocol
    from fedprune_core.deploy.settings import NodeSettings
    from fedprune_core.fl.round import broadcaster
    from fedprune_core.fl.state import ClientState
    from fedprune_core.fl.types import ClientResult, Update

    seen = _recording(monkeypatch)
    cfg = tiny_config(run_name="deployed", **SCHEDULE)
    settings = NodeSettings(node_index=0, num_nodes=1, state_dir=tmp_path / "node")
    kept: dict[int, int] = {}  # the last round the server kept of each client (its base round)

    def through_the_node(state, cohort, setup, planner):
        broadcast = broadcaster(state, setup, planner)
        for slot in cohort.clients:
            cid = slot.client_id
            down = broadcast(cid, state.clients[cid].ratio)
            task = protocol.Task(cfg.to_dict(), cohort.round, cid, kept.get(cid, 0), down,
                                 protocol.fingerprint())
            message, record = node.run_task(settings, task)
            result = ClientResult.from_record(message, record)
            kept[cid] = cohort.round
            yield Update(slot, len(down), result, ClientState(result.next_ratio))

    result = run_experiment(cfg, updates=through_the_node)
    steps = _steps(result.clients, cfg.batch_size, cfg.local_epochs, cohort=False)
    assert sorted(steps) == [1, 2, 3]
    assert seen == pytest.approx([LR_OF_ROUND[r] for r in sorted(steps) for _ in range(steps[r])])


def test_the_rounds_settings_carry_no_schedule():
    hp = LocalTraining(lr=0.1, momentum=0.9, lr_milestones=(1,), lr_gamma=0.5)
    assert hp.for_round(1) == RoundTraining(lr=0.1, momentum=0.9)
    assert hp.for_round(2) == RoundTraining(lr=0.05, momentum=0.9)


def _sgd_reference(params, grads_per_step, lr, momentum, weight_decay, clip, masks):
    """torch.optim.SGD with clip_grad_norm_ and masks, as the seed's loop wrote them."""
    params = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    for grads in grads_per_step:
        for p, g, m in zip(params, grads, masks):
            p.grad = g.clone() * m
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        with torch.no_grad():
            for p, m in zip(params, masks):
                p.mul_(m)
    return [p.detach() for p in params]


def test_sgd_update_is_torch_sgds_arithmetic_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 3, 3, 3), (8,), (10, 72), (10,)]
    params = [torch.randn(s, generator=g) for s in shapes]
    masks = [(torch.rand(s, generator=g) > 0.3).float() for s in shapes]
    steps = [[3 * torch.randn(s, generator=g) for s in shapes] for _ in range(4)]
    hp = RoundTraining(lr=0.05, momentum=0.9, weight_decay=5e-4, grad_clip_norm=1.0)
    ours, bufs = [p.clone() for p in params], None
    for grads in steps:
        _, bufs = sgd_update(ours, [x.clone() for x in grads], bufs, hp, masks)
    reference = _sgd_reference(params, steps, 0.05, 0.9, 5e-4, 1.0, masks)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))
    assert all((p[m == 0] == 0).all() for p, m in zip(ours, masks))  # pruned weights stay zero


def test_sgd_update_on_a_stack_steps_only_the_active_clients_each_clipped_on_its_own():
    hp = RoundTraining(lr=1.0, momentum=0.5, grad_clip_norm=1.0)
    params = torch.zeros(2, 2)
    grads = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # norms 5 (clipped to 1) and 0.5 (kept)
    active = torch.tensor([[True], [True]])
    (params,), bufs = sgd_update([params], [grads.clone()], None, hp, None, active)
    torch.testing.assert_close(params, -torch.tensor([[0.6, 0.8], [0.3, 0.4]]), atol=1e-6,
                               rtol=0)
    # client 1 sits out step 2: its parameters and momentum stay; client 0's momentum adds up
    (params2,), bufs2 = sgd_update([params], [grads.clone()], bufs, hp, None,
                                   torch.tensor([[True], [False]]))
    torch.testing.assert_close(params2[0], params[0] - (0.5 * torch.tensor([0.6, 0.8])
                                                        + torch.tensor([0.6, 0.8])), atol=1e-6,
                               rtol=0)
    assert torch.equal(params2[1], params[1]) and torch.equal(bufs2[0][1], bufs[0][1])


def test_distillation_differentiates_the_sum_and_reports_the_narrower_loss():
    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])

    def logits(widths):  # "widths": the first two outputs only
        out = x @ w.T
        return out if widths is None else out * torch.tensor([1.0, 1.0, 0.0, 0.0])
    loss, reported = training.step_loss(logits, y, widths=[2], distill=True)
    teacher = logits(None)
    student = torch.nn.functional.cross_entropy(logits([2]), teacher.detach().softmax(1))
    assert reported.item() == pytest.approx(student.item())
    assert loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(teacher, y).item() + student.item())
