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
    for target in ("run", "test", "ablations", "width-study", "reproduce", "analysis", "report",
                   "report-pdf", "lab", "bench", "deploy"):
        assert f"make {target}" in text
        assert f"\n{target}:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_counts_the_ablations_and_study_files_it_names():
    """The numbers a reader copies: the methods `make ablations` runs, and the study's."""
    import re

    text = (ROOT / "README.md").read_text()
    runs = [p for p in (ROOT / "params" / "ablations").glob("*.yaml") if not p.name.startswith("_")]
    assert f"# {len(runs)} methods x 3 seeds" in text
    for path in runs:  # each ablation file is named in the README
        assert f"`{path.stem}`" in text or path.stem.startswith("sparsity_sweep"), path.stem
    for phase in ("converged", "early"):  # the width study's two phases
        study = [p for p in (ROOT / "params" / "width_study" / phase).glob("*.yaml")
                 if not p.name.startswith("_")]
        match = re.search(rf"\(`params/width_study/{phase}/`[^)]*\): (\d+) methods", text)
        assert match and int(match.group(1)) == len(study) > 0, phase
