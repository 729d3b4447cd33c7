"""Third-party predictors: a file path, an entry point of a (small, on-path) distribution,
`--predictor-args` through `set_params`, records that keep variants apart, `check_predictor`."""

from __future__ import annotations

import json
import textwrap

import pytest
from test_cli import assert_one_line_error, call_main
from test_evaluate import built  # noqa: F401 (fixture)

from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError
from forelen.leaderboard.evaluate import run_evaluation
from forelen.predictors import check_predictor, load_predictor

PLUGIN = '''
import numpy as np

from forelen.predictors import NotFittedError, Predictor, PredictorInfo


class ScaledPromptLength(Predictor):
    """Predicts scale x the mean train ratio of output to prompt tokens x prompt tokens."""

    info = PredictorInfo(name="scaled-prompt-length", version="1", family="reference",
                         reference="a test plugin", requires=("prompt_tokens",))
    card = "---\\ntitle: Scaled prompt length\\n---\\nA *plugin* card. <script>x</script>"

    def __init__(self, scale: float = 1.0, seed: int = 0):
        self.scale = scale
        self.seed = seed

    def fit(self, table, y, eval_set=None):
        self.ratio_ = float(np.mean(y) / np.mean(np.asarray(table["prompt_tokens"], float)))
        return self

    def predict(self, table):
        if not hasattr(self, "ratio_"):
            raise NotFittedError("fit first")
        return self.scale * self.ratio_ * np.asarray(table["prompt_tokens"], float)
'''


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "my_plugin.py"
    path.write_text(textwrap.dedent(PLUGIN))
    return path


def test_a_plugin_from_a_file_evaluates_and_variants_do_not_clobber(built, plugin_file, tmp_path):
    spec = f"{plugin_file}:ScaledPromptLength"
    results = tmp_path / "results"
    plain = run_evaluation(DatasetFolder(built), ["tiny-llama-rl"], [spec], 0, str(results))
    scaled = run_evaluation(DatasetFolder(built), ["tiny-llama-rl"], [spec], 0, str(results),
                            predictor_args={"scale": 2.0})
    (a,), (b,) = plain, scaled
    assert a["predictor"]["key"] == "scaled-prompt-length"
    assert b["predictor"]["key"].startswith("scaled-prompt-length@")
    assert b["predictor"]["non_default_params"] == {"scale": 2.0}
    assert a["predictor"]["origin"]["kind"] == "file"
    assert len(a["predictor"]["origin"]["sha256"]) == 64
    files = sorted(p.name for p in (results / "tiny-llama-rl").glob("*.json"))
    assert files == sorted([f"{a['predictor']['key']}.json", f"{b['predictor']['key']}.json"])
    assert b["metrics"]["mae"] != a["metrics"]["mae"]
    # the plugin's card reaches the page, escaped like ours; both variants are rows
    from forelen.leaderboard.render import render_command

    html = render_command(None, str(results), None).read_text()
    assert "Scaled prompt length" in html and "<em>plugin</em>" in html and "<script>x" not in html
    assert b["predictor"]["key"] in html


def test_an_entry_point_of_an_installed_distribution(built, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "forelen_demo_plugin").mkdir(parents=True)
    (site / "forelen_demo_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "forelen_demo_plugin-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: forelen-demo-plugin\n"
                                   "Version: 0.3\n")
    (dist / "entry_points.txt").write_text(
        "[forelen.predictors]\ndemo-scaled = forelen_demo_plugin:ScaledPromptLength\n")
    (dist / "top_level.txt").write_text("forelen_demo_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    cls, origin = load_predictor("demo-scaled")
    assert origin == {"kind": "entry-point", "entry_point": "forelen_demo_plugin:ScaledPromptLength",
                      "distribution": "forelen-demo-plugin", "version": "0.3"}
    (record,) = run_evaluation(DatasetFolder(built), ["tiny-llama-rl"], ["demo-scaled"], 0,
                               str(tmp_path / "results"))
    assert record["predictor"]["name"] == "scaled-prompt-length"
    _, origin = load_predictor("forelen_demo_plugin:ScaledPromptLength")
    assert origin["kind"] == "module" and origin["distribution"] == "forelen-demo-plugin"


def test_predictor_args_are_checked_and_bad_specs_are_one_line(built, plugin_file, tmp_path,
                                                               monkeypatch, capsys):
    base = ["evaluate", "--data", str(built), "--results", str(tmp_path / "r")]
    code, out, err = call_main(monkeypatch, capsys, *base, "--predictor",
                               f"{plugin_file}:ScaledPromptLength", "--predictor-args", "scael=2")
    assert "has no parameter 'scael'" in assert_one_line_error(code, out, err)
    code, out, err = call_main(monkeypatch, capsys, *base, "--predictor",
                               f"{plugin_file}:Missing")
    assert "has no Missing" in assert_one_line_error(code, out, err)
    code, out, err = call_main(monkeypatch, capsys, *base, "--predictor", "nowhere.py:Cls")
    assert "no such file" in assert_one_line_error(code, out, err)
    code, out, err = call_main(monkeypatch, capsys, *base, "--predictor", "json:JSONDecoder")
    assert "not a subclass" in assert_one_line_error(code, out, err)


def test_check_predictor_accepts_a_good_class_and_names_what_a_broken_one_breaks(plugin_file):
    cls, _ = load_predictor(f"{plugin_file}:ScaledPromptLength")
    check_predictor(cls)

    class LearnsInInit(cls):
        def __init__(self, scale: float = 1.0, seed: int = 0):
            super().__init__(scale, seed)
            self.ratio_ = 1.0

    with pytest.raises(AssertionError, match="learned state"):
        check_predictor(LearnsInInit)

    class WrongShape(cls):
        def predict(self, table):
            return super().predict(table)[:-1]

    with pytest.raises(AssertionError, match=r"\(N,\)"):
        check_predictor(WrongShape)

    class NoFitCheck(cls):
        def predict(self, table):
            import numpy as np

            return np.zeros(table.n)

    with pytest.raises(AssertionError, match="NotFittedError"):
        check_predictor(NoFitCheck)


def test_set_params_refuses_unknown_names():
    cls, _ = load_predictor("constant-median")
    with pytest.raises(ForelenError, match="no parameter 'bins'"):
        cls().set_params(bins=3)
    json.dumps(cls().get_params())
