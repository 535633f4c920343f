"""A method by one name (methods/presets): `method: fjord` sets FjORD's fields, a params file
written either way is the same run, conflicts and a method's requirements are one-line errors,
and a new method is one file plus its registry line."""

import importlib.util
import sys
import textwrap

import pandas as pd
import pytest

from conftest import TINY
from fedprune_core.config import ConfigError, ExperimentConfig, experiment_params
from fedprune_core.methods import registry
from fedprune_core.methods.registry import names
from fedprune_core.run.loop import run_experiment
from fedprune_core.run.summary import TIMING_COLUMNS


def test_a_method_by_name_sets_its_fields_and_leaves_its_knobs():
    cfg = ExperimentConfig(method="fjord", fjord_levels=3, pruning_ratio=0.3)
    assert (cfg.pruning_mode, cfg.structured_selection, cfg.local_training) == (
        "structured", "first", "fjord")
    assert (cfg.fjord_levels, cfg.pruning_ratio) == (3, 0.3)  # its knobs stay the user's
    flat = ExperimentConfig(structured_selection="first", local_training="fjord", fjord_levels=3,
                            pruning_ratio=0.3)
    assert experiment_params(cfg) == experiment_params(flat)  # the same experiment
    assert cfg.method_label == flat.method_label
    heterofl = ExperimentConfig(method="heterofl")
    assert (heterofl.local_training, heterofl.masked_ce, heterofl.structured_selection) == (
        "scaler", True, "first")
    fedavg = ExperimentConfig(method="fedavg")
    assert fedavg.method_label == "FedAvg"


def test_a_field_the_method_sets_otherwise_is_refused_naming_both():
    with pytest.raises(ConfigError, match=r"^structured_selection: 'l1' is not allowed with method "
                                          r"fjord, which sets structured_selection='first'"):
        ExperimentConfig.from_dict({"method": "fjord", "structured_selection": "l1"})
    with pytest.raises(ConfigError, match=r"^method: 'fjrod' is not allowed; allowed: .*fjord"):
        ExperimentConfig(method="fjrod")


def test_a_methods_requirements_are_declared_beside_it_and_hold_for_flat_fields_too():
    with pytest.raises(ConfigError, match="^local_training: 'fjord' is not allowed; allowed: "
                                          "fjord with structured_selection first"):
        ExperimentConfig(local_training="fjord")  # structured_selection l1: not nested
    with pytest.raises(ConfigError, match="^fjord_distill: True is not allowed"):
        ExperimentConfig(fjord_distill=True)
    with pytest.raises(ConfigError, match="^masked_ce: True"):
        ExperimentConfig(pruning_mode="none", masked_ce=True)
    with pytest.raises(ConfigError, match="^sparsify_method: 'none' is not allowed"):
        ExperimentConfig(method="sparsify", sparsify_method="none")


def _frame(run_dir, name):
    return pd.read_csv(run_dir / f"{name}.csv").drop(columns=list(TIMING_COLUMNS.get(name, ())))


def test_a_params_file_written_either_way_is_the_same_run(tmp_path):
    by_name = tmp_path / "by_name.yaml"
    by_name.write_text("method: fjord\nfjord_levels: 3\n")
    flat = tmp_path / "flat.yaml"
    flat.write_text("pruning_mode: structured\nstructured_selection: first\n"
                    "local_training: fjord\nfjord_levels: 3\n")
    runs = [run_experiment(ExperimentConfig.from_yaml(path, overrides={
        **TINY, "results_dir": str(tmp_path / "results"), "run_name": path.stem})).run_dir
        for path in (by_name, flat)]
    for name in ("metrics", "clients"):
        pd.testing.assert_frame_equal(_frame(runs[0], name), _frame(runs[1], name),
                                      check_exact=True)


NEW_METHOD = '''
"""A test's method: FedRolex's rolling window, trained without the scaler, two units a round."""

from fedprune_core.methods.presets.base import Preset
from fedprune_core.methods.registry import register


@register("method", "plain_rolex")
class PlainRolex(Preset):
    sets = {"pruning_mode": "structured", "structured_selection": "rolex",
            "local_training": "sgd", "rolex_step": 2}
    knobs = ("pruning_ratio",)
'''


@pytest.fixture
def forget_plain_rolex():
    yield
    registry._REGISTRY["method"].pop("plain_rolex", None)  # other tests list the methods
    sys.modules.pop("plain_rolex", None)


def test_a_new_method_is_one_file_and_its_registry_line_and_runs_end_to_end(
        tiny_config, tmp_path, forget_plain_rolex):
    path = tmp_path / "plain_rolex.py"
    path.write_text(textwrap.dedent(NEW_METHOD))
    spec = importlib.util.spec_from_file_location("plain_rolex", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["plain_rolex"] = module
    spec.loader.exec_module(module)  # the @register line is all the suite needs
    assert "plain_rolex" in names("method")
    cfg = tiny_config(method="plain_rolex", run_name="plain_rolex")
    assert (cfg.structured_selection, cfg.rolex_step) == ("rolex", 2)
    result = run_experiment(cfg)
    assert result.summary["rounds_completed"] == 2
    assert (result.clients.pruning_ratio > 0).all()  # sub-models, not the full model
    assert "rolex/2" in cfg.method_label and "scaler" not in cfg.method_label
