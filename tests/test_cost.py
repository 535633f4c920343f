"""Cost to accuracy (analysis/cost.py) on fake runs with known curves, against tables worked out
by hand from tests/fake_runs.py: FedAvg trains 1 GFLOP and sends 0.8 MB a round in 2 simulated
seconds, the hybrid 0.6 GFLOP, 0.08 MB and 1.2 s; round 2 is not evaluated."""

import pytest

from fake_runs import make_fake_results
from fedprune_core.analysis.cost import accuracy_at_budget, cost_to_accuracy, plateau
from fedprune_core.analysis.loading import load_runs

HYBRID = "Hybrid(structured+topk 0.9)"


@pytest.fixture
def runs(tmp_path):
    return load_runs(make_fake_results(tmp_path / "results"))


def test_the_targets_are_fractions_of_the_baselines_plateau(runs):
    # FedAvg's tails: mean(50, 85, 91, 92) = 79.5 and mean(55, 89, 89.5, 94) = 81.875
    assert plateau(runs) == pytest.approx(80.6875)
    table = cost_to_accuracy(runs, absolute=90.0)
    assert list(dict.fromkeys(table["Target"])) == [
        "90% of FedAvg's plateau", "97% of FedAvg's plateau", "90%"]
    assert list(dict.fromkeys(table["Target acc. (%)"])) == [72.62, 78.27, 90.0]


def test_cost_to_accuracy_by_hand(runs):
    table = cost_to_accuracy(runs, absolute=90.0).set_index(["Target", "Method"])
    # 90% of the plateau (72.62%): FedAvg at round 3 on both seeds; the hybrid at round 4 (80)
    # on seed 0 and round 3 (75) on seed 1
    fedavg = table.loc[("90% of FedAvg's plateau", "FedAvg")]
    assert (fedavg["Rounds"], fedavg["Uplink (MB)"], fedavg["Client GFLOP"],
            fedavg["Simulated time (s)"]) == pytest.approx((3, 2.4, 3.0, 6.0))
    hybrid = table.loc[("90% of FedAvg's plateau", HYBRID)]
    assert hybrid["Seeds reached"] == "2/2"
    assert (hybrid["Rounds"], hybrid["Uplink (MB)"], hybrid["Client GFLOP"],
            hybrid["Simulated time (s)"]) == pytest.approx((3.5, 0.28, 2.1, 4.2))
    # paired: 4.8 / 6 and 3.6 / 6, so the hybrid is there in 70% of FedAvg's simulated time
    assert hybrid["Simulated time / FedAvg's (paired)"] == pytest.approx(0.7)
    assert table.loc[("97% of FedAvg's plateau", HYBRID),
                     "Simulated time / FedAvg's (paired)"] == pytest.approx(0.8)
    # 90% absolute: FedAvg seed 0 at round 4, seed 1 at round 5; the hybrid only seed 1 (90)
    assert table.loc[("90%", "FedAvg"), "Rounds"] == pytest.approx(4.5)
    assert table.loc[("90%", HYBRID), "Seeds reached"] == "1/2"
    assert table.loc[("90%", HYBRID), "Rounds"] == pytest.approx(5)


def test_accuracy_at_a_budget_shows_a_method_ahead_midway_that_ends_behind(runs):
    table = accuracy_at_budget(runs).set_index(["Budget", "Method"])
    delta = "Δ vs FedAvg, paired (pp)"
    # 25% of FedAvg's 5 GFLOP = 1.25: FedAvg's round 1 (50, 55); the hybrid's rounds 1-2, of
    # which round 1 is evaluated (40, 45)
    quarter = "25% of FedAvg's client GFLOP"
    assert table.loc[(quarter, "FedAvg"), "Acc. (%)"] == pytest.approx(52.5)
    assert table.loc[(quarter, HYBRID), delta] == pytest.approx(-10.0)
    assert table.loc[(quarter, HYBRID), "Budget value"] == pytest.approx(1.25)
    # 50% = 2.5 GFLOP: FedAvg still round 1; the hybrid rounds 1, 3, 4: mean(40, 70, 80) and
    # mean(45, 75, 88): ahead by 13.33 and 14.33 points
    half = "50% of FedAvg's client GFLOP"
    assert table.loc[(half, HYBRID), "Acc. (%)"] == pytest.approx((63.3333 + 69.3333) / 2, 1e-4)
    assert table.loc[(half, HYBRID), delta] == pytest.approx(13.8333, abs=1e-4)
    # all of FedAvg's budget: every round; the hybrid ends 10.75 and 7.375 points behind
    full = "100% of FedAvg's client GFLOP"
    assert table.loc[(full, HYBRID), delta] == pytest.approx(-9.0625)
    assert table.loc[(full, HYBRID), "Seeds paired"] == 2
    # the uplink budget: the hybrid sends a tenth, so at 25% of FedAvg's 4 MB it is done
    uplink = table.loc[("25% of FedAvg's uplink MB", HYBRID)]
    assert uplink["Acc. (%)"] == pytest.approx((68.75 + 74.5) / 2)
