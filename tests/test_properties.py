"""Property-based tests of what users type (Hypothesis): params files and flag values give a
config or one error line naming the parameter, never a traceback; any label or run name that
validation lets through comes back, cell for cell, from the csv, md, tex and HTML tables.

Derandomised with a fixed example count (conftest.py's profile), so a run is repeatable and its
cost fixed. Each case Hypothesis once found is kept as an `@example`."""

import dataclasses
import html
import html.parser
import io
import re

import pandas as pd
import pytest
import yaml
from hypothesis import example, given, settings, strategies as st
from matplotlib.backends.backend_agg import FigureCanvasAgg

from fedprune_core.analysis.tables import write_table
from fedprune_core.checks import check_folder_name
from fedprune_core.cli import build_parser
from fedprune_core.config import ConfigError, ExperimentConfig, field_names
from fedprune_core.flags import config_from_args, parse_command_line

NAMES = field_names()
TYPO = st.sampled_from(NAMES).map(lambda n: n[:-1] + ("x" if n[-1] != "x" else "y"))
KEYS = st.one_of(st.sampled_from(NAMES), TYPO, st.text(min_size=1, max_size=12))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
# the values that are meant: each field's own type, near its valid range
PLAUSIBLE = st.one_of(st.integers(-3, 300), st.floats(-2.0, 2.0, allow_nan=False),
                      st.sampled_from(["none", "topk", "fjord", "first", "bn", "auto", ""]),
                      st.booleans())


def _one_line_naming(err: Exception, names) -> None:
    text = str(err)
    assert "\n" not in text, text
    assert any(str(n) in text or repr(str(n)) in text for n in names), text


@given(st.dictionaries(KEYS, st.one_of(PLAUSIBLE, VALUES), max_size=4))
@example({"sparsity_ration": 0.9})  # a typo: "did you mean sparsity_ratio?"
@example({"\n": 0})  # found: an unknown key with a line break broke the error into two lines
@example({"method": "fjord", "structured_selection": "l1"})  # a conflict with the method
@example({"model_norm": "bn", "model": "vgg_cifar"})
def test_any_params_file_is_a_config_or_one_line_naming_the_parameter(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("params") / "p.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True) if doc else "{}\n",
                    encoding="utf-8")
    try:
        cfg = ExperimentConfig.from_yaml(path)
    except ConfigError as err:
        _one_line_naming(err, [*doc.keys(), "params file"])
        typos = [k for k in doc if k not in NAMES and k in {n[:-1] + "x" for n in NAMES}]
        if typos and "did you mean" not in str(err):
            assert "allowed:" in str(err)
        return
    for key, value in doc.items():  # what was accepted is what the config holds
        if key in NAMES and isinstance(value, str) and key != "method":
            assert str(getattr(cfg, key)) == value or key in ("results_dir", "data_root")


@given(st.sampled_from(NAMES), st.one_of(PLAUSIBLE.map(str), st.text(max_size=15)))
@example("sparsify_method", "top-k")  # a choice not offered: the allowed ones, a suggestion
@example("rounds", "many")
def test_any_flag_value_is_a_config_or_a_short_error_naming_the_flag(capsys, name, value):
    kind = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}[name]
    argv = ["run", f"--{name}" if kind != "bool" else f"--{name}"]
    if kind != "bool":
        argv.append(value)
    try:
        cfg = config_from_args(parse_command_line(build_parser(), argv))
    except SystemExit as stop:
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.code == 2 and 1 <= len(err) <= 3, err
        assert err[-1].startswith("error: ") and name in err[-1], err
        return
    except ConfigError as err:
        _one_line_naming(err, [name, "method"])
        return
    assert dataclasses.is_dataclass(cfg)


def test_a_mistyped_flag_is_two_lines_with_the_closest_flag(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_command_line(build_parser(), ["run", "--sparsity_ration", "0.9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 2
    assert err[0].startswith("usage: python -m fedprune_core run ")
    assert err[1] == "error: unrecognized argument --sparsity_ration; did you mean --sparsity_ratio?"
    with pytest.raises(SystemExit):
        parse_command_line(build_parser(), ["run", "--round", "3"])  # no abbreviations
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("did you mean --rounds?")


# --- user texts in tables ------------------------------------------------------------------
def _valid_label(text: str) -> bool:
    try:
        ExperimentConfig(label=text)
        return True
    except ConfigError:
        return False


def _valid_run_name(text: str) -> bool:
    try:
        check_folder_name(text, "run_name")
        return True
    except ConfigError:
        return False


LABELS = st.text(min_size=1, max_size=30).filter(_valid_label)
RUN_NAMES = st.text(min_size=1, max_size=30).filter(_valid_run_name)


class _Cells(html.parser.HTMLParser):
    """The text of every <td> of an HTML table."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cells, self._in = [], False

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._in, self.cells = True, self.cells + [""]

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in = False

    def handle_data(self, data):
        if self._in:
            self.cells[-1] += data


def _latex_cells(tex: str) -> list[str]:
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    rows = [r for r in body.split("\\\\") if r.strip()]
    cells = [c.strip() for r in rows for c in re.split(r"(?<!\\)&", r)]
    words = {"textbackslash": "\\", "textasciitilde": "~", "textasciicircum": "^"}
    out = []
    for c in cells:
        for command, char in (("$\\pm$", "±"), ("$\\times$", "×"), ("--", "–"), ("-{}-", "--")):
            c = c.replace(command, char)
        c = re.sub(r"\\(textbackslash|textasciitilde|textasciicircum)(?: |(?=[^a-zA-Z])|$)",
                   lambda m: words[m[1]], c)
        out.append(re.sub(r"\\([&%$#_{}])", r"\1", c))
    return out


@given(st.lists(LABELS, min_size=1, max_size=3, unique=True), RUN_NAMES)
@example(["a|b", "x*y*z"], "run_1")  # a cell separator and emphasis
@example(["cost_weighted $5$", "<b>bold</b> & more"], "r")  # math and HTML
@example(["back\\slash", "~tilde^"], "n")
def test_any_label_and_run_name_read_back_from_every_table(tmp_path_factory, labels, run_name):
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    table = pd.DataFrame({"Method": labels, "run_name": [run_name] * len(labels),
                          "Tail acc. (%)": [f"{90 + i}.00 ± 1.00" for i in range(len(labels))]})
    paths = write_table(table, tmp_path_factory.mktemp("tables"), "t")
    csv = pd.read_csv(paths["csv"], dtype=str, keep_default_na=False)
    assert csv["Method"].tolist() == labels and csv["run_name"].tolist() == [run_name] * len(labels)
    cells = _Cells()
    cells.feed(markdown2html_mistune(paths["md"].read_text()))  # what the report renders
    expected = [*table.columns, *(c for row in table.values.tolist() for c in row)]
    assert [html.unescape(c).strip() for c in cells.cells] == [c.strip() for c in expected]
    tex = _latex_cells(paths["tex"].read_text())
    assert tex == [c.strip() for row in table.values.tolist() for c in row]


@settings(max_examples=8)
@given(st.lists(LABELS, min_size=1, max_size=2, unique=True))
@example(["a $b", "FedAvg"])  # one dollar: matplotlib would read math and fail to draw
@example(["$5$ x", "FedAvg"])  # two: it would draw "5 x", not the label
def test_any_label_draws_in_a_figure_legend_as_written(tmp_path_factory, labels):
    from fake_runs import write_run
    from fedprune_core.analysis.figures import tail_figure
    from fedprune_core.analysis.loading import label_aliases, load_runs

    results = tmp_path_factory.mktemp("runs")
    for i, label in enumerate(labels):
        write_run(results, label, 0, [50.0, 60.0 + i], name=f"r{i}", byte_fraction=1.0,
                  flop_fraction=1.0, config={"label": label})
    runs = load_runs(results)
    fig = tail_figure(runs, "total_uplink_mb", "Total uplink", "MB")
    FigureCanvasAgg(fig).print_png(io.BytesIO())  # draws every text
    aliases = label_aliases(runs.summaries)
    shown = [t.get_text() for t in fig.legends[0].get_texts()]
    assert shown == [aliases[label] for label in sorted(labels, key=list(aliases).index)]
    assert all(not t.get_parse_math() for t in fig.legends[0].get_texts())
