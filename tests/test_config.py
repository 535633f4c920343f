import subprocess
import sys

import pytest

from fedprune_core.cli import build_parser, config_from_args
from fedprune_core.config import ConfigError, ExperimentConfig


def test_defaults_are_the_seeds():
    cfg = ExperimentConfig()
    assert (cfg.rounds, cfg.num_clients, cfg.clients_per_round, cfg.local_epochs) == (20, 20, 10, 2)
    assert (cfg.pruning_mode, cfg.pruning_ratio, cfg.adaptive_ratio) == ("structured", 0.4, True)
    assert (cfg.sparsify_method, cfg.sparsity_ratio, cfg.error_feedback) == ("cost_weighted", 0.95, True)
    assert (cfg.lr, cfg.batch_size, cfg.classes_per_client) == (0.01, 64, 2)
    assert (cfg.min_pruning_ratio, cfg.max_pruning_ratio, cfg.seed) == (0.1, 0.8, 0)
    assert (cfg.device, cfg.results_dir) == ("cpu", "./results")


@pytest.mark.parametrize("changes, name", [
    ({"rounds": -1}, "rounds"),
    ({"rounds": 0}, "rounds"),
    ({"pruning_ratio": 1.0}, "pruning_ratio"),
    ({"sparsity_ratio": -0.1}, "sparsity_ratio"),
    ({"clients_per_round": 30}, "clients_per_round"),
    ({"sparsify_method": "magic"}, "sparsify_method"),
    ({"pruning_mode": "channels"}, "pruning_mode"),
    ({"partition": "zipf"}, "partition"),
    ({"classes_per_client": 11}, "classes_per_client"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"min_pruning_ratio": 0.9}, "min_pruning_ratio"),
    ({"rounds": 2.5}, "rounds"),
    ({"lr": "fast"}, "lr"),
    ({"device": "tpu"}, "device"),
    ({"sparsify_method": "cost_weighted", "sparsify_scope": "per_tensor"}, "sparsify_scope"),
])
def test_invalid_values_name_the_parameter(changes, name):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict(changes)
    assert str(err.value).startswith(f"{name}:")
    assert "allowed" in str(err.value) or "expected" in str(err.value)


def test_unknown_yaml_key_is_an_error(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("rounds: 3\nsparsity_ration: 0.9\n")
    with pytest.raises(ConfigError, match="sparsity_ration"):
        ExperimentConfig.from_yaml(f)


def test_extends_and_flags_override_files(tmp_path):
    (tmp_path / "_shared.yaml").write_text("rounds: 7\nlocal_epochs: 3\n")
    f = tmp_path / "m.yaml"
    f.write_text("extends: _shared.yaml\nsparsify_method: topk\nlocal_epochs: 1\n")
    args = build_parser().parse_args(["run", "--params", str(f), "--rounds", "4",
                                      "--no_error_feedback"])
    cfg = config_from_args(args)
    assert (cfg.rounds, cfg.local_epochs, cfg.sparsify_method) == (4, 1, "topk")
    assert cfg.error_feedback is False


def test_seed_flags_parse():
    args = build_parser().parse_args(
        ["run", "--no_pruning", "--no_sparsification", "--no_adaptive_ratio",
         "--adaptive_ratio_online", "--run_name", "baseline_fedavg", "--pruning_ratio", "0.5",
         "--round_deadline_sec", "auto", "--data_root", "/x"])
    cfg = config_from_args(args)
    assert (cfg.pruning_mode, cfg.sparsify_method, cfg.adaptive_ratio) == ("none", "none", False)
    assert cfg.adaptive_ratio_online and cfg.run_name == "baseline_fedavg"
    assert cfg.round_deadline_sec is None and cfg.pruning_ratio == 0.5
    assert cfg.method_label == "FedAvg"


def test_json_round_trip():
    cfg = ExperimentConfig(rounds=3, sparsify_method="random", label="x")
    import json
    assert ExperimentConfig.from_dict(json.loads(cfg.to_json(_meta={"a": 1}))) == cfg


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fedprune_core", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_bad_value_exits_2_without_traceback(tmp_path):
    out = _cli("run", "--sparsity_ratio", "1.5", "--results_dir", str(tmp_path))
    assert out.returncode == 2
    assert "sparsity_ratio" in out.stderr and "[0, 1)" in out.stderr
    assert "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())  # nothing started
    out = _cli("run", "--sparsify_method", "magic")
    assert out.returncode == 2 and "topk" in out.stderr and "Traceback" not in out.stderr


def test_cli_help_documents_every_parameter_with_default():
    text = " ".join(_cli("run", "--help").stdout.split())
    for f in ExperimentConfig.field_specs():
        assert f"--{f.name}" in text
    for seed_flag in ("--no_adaptive_ratio", "--no_sparsification", "--no_pruning",
                      "--no_error_feedback", "--params", "--overwrite", "--resume"):
        assert seed_flag in text
    assert "default: 0.95" in text and "default: cost_weighted" in text


def test_cuda_is_a_clear_error_without_a_gpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error path cannot be exercised")
    out = _cli("run", "--device", "cuda", "--results_dir", str(tmp_path))
    assert out.returncode == 2 and "device" in out.stderr and "cpu" in out.stderr
    assert "Traceback" not in out.stderr


def test_strings_are_not_booleans_but_numbers_may_be_strings(tmp_path):
    """PyYAML reads 1e-3 as a string (YAML 1.1 wants a dot), so numeric strings stay valid;
    a quoted "yes", "no", "true" is not silently a boolean."""
    assert ExperimentConfig.from_dict({"lr": "1e-3", "rounds": "5"}).lr == 0.001
    for text in ("yes", "no", "true", "off"):
        with pytest.raises(ConfigError, match="error_feedback: expected true or false"):
            ExperimentConfig.from_dict({"error_feedback": text})
    (tmp_path / "p.yaml").write_text("error_feedback: no\nlr: 1e-3\n")  # unquoted: YAML's own
    cfg = ExperimentConfig.from_yaml(tmp_path / "p.yaml")
    assert cfg.error_feedback is False and cfg.lr == 0.001


def test_extends_chain_names_the_files(tmp_path):
    (tmp_path / "base.yaml").write_text("rounds: 2\n")
    (tmp_path / "mid.yaml").write_text("extends: [base.yaml, missing.yaml]\n")
    (tmp_path / "top.yaml").write_text("extends: mid.yaml\n")
    with pytest.raises(ConfigError, match=r"missing.yaml does not exist \(named by extends: "
                                          r"in .*top.yaml -> .*mid.yaml\)"):
        ExperimentConfig.from_yaml(tmp_path / "top.yaml")
    (tmp_path / "ok.yaml").write_text("extends: base.yaml\nlr: 0.1\n")
    assert ExperimentConfig.from_yaml(tmp_path / "ok.yaml").rounds == 2
