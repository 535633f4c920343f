"""The docs are generated from, or checked against, the code they describe."""

from pathlib import Path

from fedprune_core.config import ExperimentConfig, parameters_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_readmes_carry_the_generated_parameter_table():
    table = parameters_markdown()
    for name in ("README.md", "README.fa.md"):
        text = (ROOT / name).read_text()
        assert table in text, f"{name}: run `make notebooks` to regenerate the parameter table"
    for f in ExperimentConfig.field_specs():
        assert f"`{f.name}`" in table


def test_readme_names_the_two_commands_and_every_make_target():
    text = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "ablations", "analysis", "report", "report-pdf", "lab", "bench"):
        assert f"make {target}" in text
        assert f"\n{target}:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
