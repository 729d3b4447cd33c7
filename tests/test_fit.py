"""Saved predictors (issue 33, part 1): `forelen fit --out DIR`, `Predictor.load(DIR)`,
`forelen evaluate --from DIR`, and the refusals: another generator, hidden size or layer; an
existing folder; a state that cannot be saved without pickle; an interrupted save.

The first half runs on the synthetic tables of the contract test (no model, fast); the second
drives the CLI on the tiny built config of tests/test_evaluate.py (slow, as every test that
builds with a model).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import FORELEN, cli_env

from forelen.errors import ForelenError
from forelen.predictors import PREDICTORS, Predictor, _saved
from forelen.predictors.checks import synthetic

CONFIG = "tiny-llama-rl"
TESTS = Path(__file__).resolve().parent
TEXT_FAST = {"ssjf-reg": dict(epochs=2, freeze_after=1), "ssjf-mc": dict(epochs=2, freeze_after=1),
             "s3": dict(epochs=1), "ltr-c": dict(epochs=1), "ltr": dict(epochs=1)}


@pytest.fixture(scope="module")
def tables():
    return synthetic(48), synthetic(16, seed=1)


def fitted(name: str, tables, seed: int = 3):
    """A predictor fitted on the synthetic train table with short training (the contract test's
    preset for the soft-label head; one or two epochs for text encoders)."""
    (train, y), (test, y_test) = tables
    pred = PREDICTORS.get(name)(seed=seed)
    params = pred.get_params()
    if "preset" in params:
        pred.preset = "small"
    if name == "trail":
        pred.epochs = 5
    if pred.info.family == "text-proxy":
        pred.set_params(max_length=32, **TEXT_FAST[name])
    cols = pred.columns(train.layers())
    pred.fit(train.select(cols), y, eval_set=(test.select(cols), y_test))
    return pred, test.select(cols)


def outputs(pred, test) -> dict:
    """Everything a saved predictor must reproduce: predictions, remaining lengths at the
    observed steps (progressive), and the predicted distribution where there is one."""
    out = {"predict": pred.predict(test)}
    if pred.info.progressive:
        for t in (1, 4, 16, 64):
            out[f"remaining_{t}"] = pred.predict_remaining(test, t)
    try:
        dist = pred.predict_distribution(test)
        out["edges"], out["probs"] = dist.edges, dist.probs
    except (AttributeError, NotImplementedError):
        pass
    return out


def assert_bitwise(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), k


SAVEABLE = [n for n in PREDICTORS.names() if n != "pia"]  # pia needs its generator: below


@pytest.mark.parametrize("name", SAVEABLE)
def test_every_predictor_saves_and_loads_bitwise(name, tables, tmp_path):
    pred, test = fitted(name, tables)
    before = outputs(pred, test)
    pred.save(tmp_path / "saved")
    loaded = Predictor.load(tmp_path / "saved")
    assert type(loaded) is type(pred) and loaded.get_params() == pred.get_params()
    assert_bitwise(before, outputs(loaded, test))
    meta = json.loads((tmp_path / "saved" / "predictor.json").read_text())
    assert meta["format"] == "forelen-predictor" and meta["predictor"]["name"] == name
    assert meta["predictor"]["version"] == pred.info.version


FRESH = ["egtp", "plp", "trail", "tpv", "prompt-length", "constant-median"]
FRESH_SCRIPT = """
import sys
import numpy as np
from forelen.predictors import Predictor
from forelen.predictors.checks import synthetic
test, _ = synthetic(16, seed=1)
for folder, out in zip(sys.argv[1::2], sys.argv[2::2]):
    pred = Predictor.load(folder)
    np.save(out, pred.predict(test.select(pred.columns(test.layers()))))
"""


def test_a_saved_predictor_loaded_in_a_fresh_process_predicts_identically(tables, tmp_path):
    expected, args = {}, []
    for name in FRESH:
        pred, test = fitted(name, tables)
        expected[name] = pred.predict(test)
        pred.save(tmp_path / name)
        args += [str(tmp_path / name), str(tmp_path / f"{name}.npy")]
    done = subprocess.run([sys.executable, "-c", FRESH_SCRIPT, *args], capture_output=True,
                          text=True, timeout=300, env=cli_env())
    assert done.returncode == 0, done.stderr
    for name in FRESH:
        got = np.load(tmp_path / f"{name}.npy", allow_pickle=False)
        assert got.dtype == expected[name].dtype and got.tobytes() == expected[name].tobytes(), name


@pytest.mark.parametrize("name", ["egtp", "tpv", "trail"])
def test_no_pickle_is_written_or_read(name, tables, tmp_path, monkeypatch):
    pred, test = fitted(name, tables)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for attr in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, attr, refuse)
    pred.save(tmp_path / "saved")
    assert_bitwise(outputs(pred, test), outputs(Predictor.load(tmp_path / "saved"), test))
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["predictor.json",
                                                                     "state.safetensors"]


def test_the_json_holds_hyper_parameters_and_the_state_file_is_checked(tables, tmp_path):
    pred, _ = fitted("tpv", tables)
    pred.save(tmp_path / "tpv")
    meta = json.loads((tmp_path / "tpv" / "predictor.json").read_text())
    assert meta["predictor"]["params"]["steps"] == {"$tuple": [0, 1, 2, 4, 8, 16, 32, 64]}
    assert meta["state"]["static_"]["$sklearn"] == "sklearn.pipeline.Pipeline"
    assert len(meta["tensors"]["sha256"]) == 64
    state = tmp_path / "tpv" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ForelenError, match="is corrupt: state.safetensors"):
        Predictor.load(tmp_path / "tpv")


def test_loading_refuses_another_class_a_newer_version_and_a_non_predictor(tables, tmp_path,
                                                                          monkeypatch):
    from forelen.predictors.egtp import EGTP
    from forelen.predictors.references import ConstantMedian

    pred, _ = fitted("constant-median", tables)
    pred.save(tmp_path / "cm")
    assert isinstance(ConstantMedian.load(tmp_path / "cm"), ConstantMedian)
    with pytest.raises(ForelenError, match="holds a saved constant-median, not a egtp"):
        EGTP.load(tmp_path / "cm")
    with pytest.raises(ForelenError, match="no saved predictor at"):
        Predictor.load(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ForelenError, match="is not a saved predictor"):
        Predictor.load(tmp_path / "plain")
    monkeypatch.setattr(ConstantMedian, "info",
                        ConstantMedian.info.__class__(**{**vars(ConstantMedian.info),
                                                         "version": "2"}))
    with pytest.raises(ForelenError, match="version 1 .*here is version 2"):
        Predictor.load(tmp_path / "cm")


def test_an_existing_folder_is_refused_unless_overwrite_and_never_a_non_predictor(tables,
                                                                                 tmp_path):
    first, test = fitted("egtp", tables, seed=1)
    second, _ = fitted("egtp", tables, seed=2)
    first.save(tmp_path / "egtp")
    with pytest.raises(ForelenError, match="already exists; pass --overwrite"):
        second.save(tmp_path / "egtp")
    assert_bitwise(outputs(first, test), outputs(Predictor.load(tmp_path / "egtp"), test))
    second.save(tmp_path / "egtp", overwrite=True)
    assert_bitwise(outputs(second, test), outputs(Predictor.load(tmp_path / "egtp"), test))
    data = tmp_path / "data"
    data.mkdir()
    (data / "precious.parquet").write_bytes(b"rows")
    with pytest.raises(ForelenError, match="is not a saved predictor .*refusing to replace it"):
        second.save(data, overwrite=True)
    assert (data / "precious.parquet").read_bytes() == b"rows"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "egtp"]


def test_an_interrupted_save_leaves_nothing(tables, tmp_path, monkeypatch):
    pred, _ = fitted("egtp", tables)

    def interrupted(self, file):
        file.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(_saved.Codec, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pred.save(tmp_path / "egtp")
    assert list(tmp_path.iterdir()) == []
    # an old saved predictor survives an interrupted replacement
    monkeypatch.undo()
    pred.save(tmp_path / "egtp")
    monkeypatch.setattr(_saved.Codec, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pred.save(tmp_path / "egtp", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["egtp"]
    monkeypatch.undo()
    Predictor.load(tmp_path / "egtp")


def test_a_state_that_needs_pickle_is_refused_in_one_line(tmp_path):
    from forelen.predictors import PredictorInfo

    class Opaque(Predictor):
        info = PredictorInfo(name="opaque", version="1", family="reference", reference="test",
                             requires=("prompt_tokens",))

        def __init__(self, seed: int = 0):
            self.seed = seed

        def fit(self, table, y, eval_set=None):
            self.rule_ = lambda n: 2 * n
            return self

    with pytest.raises(ForelenError) as info:
        Opaque().fit(None, None).save(tmp_path / "opaque")
    message = str(info.value)
    assert "\n" not in message and "cannot save opaque without pickle" in message
    assert "rule_ is a builtins.function" in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ForelenError, match="opaque is not fitted"):
        Opaque().save(tmp_path / "opaque")


# ------------------------------------------------------------------ the CLI on a built config

from test_evaluate import built  # noqa: E402,F401 (fixture: the tiny rl config)


def run(*args, cwd=None):
    return subprocess.run([FORELEN, *args], capture_output=True, text=True, env=cli_env(),
                          timeout=600, cwd=cwd)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("name", ["egtp", "plp", "constant-median"])
def test_evaluate_from_gives_the_record_of_evaluate_with_refit(name, built, tmp_path):
    saved = tmp_path / "saved" / name
    done = run("fit", "--predictor", name, "--data", str(built), "--config", CONFIG, "--out",
               str(saved), "--seed", "7")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(saved) and "saved" in done.stderr
    meta = json.loads((saved / "predictor.json").read_text())
    fitted_on = meta["fitted_on"]
    assert fitted_on["dataset"]["config"] == CONFIG
    assert len(fitted_on["dataset"]["fingerprint"]) == 64
    assert fitted_on["generator"]["hidden_size"] == 32 and fitted_on["generator"]["model_location"]
    assert meta["fit"]["seed"] == 7 and meta["provenance"]["forelen_version"]
    assert "git_commit" in meta["provenance"] and meta["provenance"]["library_versions"]["torch"]
    if name != "constant-median":
        assert fitted_on["layers"] == [3] and fitted_on["columns"][0] == "egtp_l3"

    refit = run("evaluate", "--predictor", name, "--data", str(built), "--config", CONFIG,
                "--seed", "7", "--results", str(tmp_path / "refit"))
    assert refit.returncode == 0, refit.stderr
    # --from alone: the dataset and config it was fitted on, and its seed
    loaded = run("evaluate", "--from", str(saved), "--results", str(tmp_path / "loaded"))
    assert loaded.returncode == 0, loaded.stderr
    a = json.loads((tmp_path / "refit" / CONFIG / f"{name}.json").read_text())
    b = json.loads((tmp_path / "loaded" / CONFIG / f"{name}.json").read_text())
    assert b["predictions_sha256"] == a["predictions_sha256"]
    assert b["metrics"]["mae"] == a["metrics"]["mae"] and b["metrics"] == a["metrics"]
    assert b["per_step"] == a["per_step"] and b["validation"] == a["validation"]
    assert b["protocol"] == a["protocol"] | {"loaded": True} and b["protocol"]["seed"] == 7
    assert b["predictor"]["key"] == a["predictor"]["key"] == name
    assert b["predictor"]["params"] == a["predictor"]["params"]
    assert b["timing"]["fit_s"] is None and a["timing"]["fit_s"] > 0
    assert b["saved_predictor"]["fitted_on"] == fitted_on
    assert b["saved_predictor"]["state_sha256"] == meta["tensors"]["sha256"]
    assert b["saved_predictor"]["provenance"] == meta["provenance"]
    assert "without fitting" in loaded.stderr


@pytest.fixture(scope="module")
def others(tiny_model_dir, tmp_path_factory, prompts_file):
    """Configs the rl fit cannot score, or can: a generator of hidden size 48; the same tiny
    generator's cot config recorded at layers 2 and 3 (the rl config has 1 and 3)."""
    import conftest

    from forelen.builders.build import BuildOptions, run_build

    root = tmp_path_factory.mktemp("others")
    mp = pytest.MonkeyPatch()
    mp.setitem(conftest.TINY, "hidden_size", 48)
    wide = conftest.build_tiny_model(root / "tiny-llama-48")
    mp.undo()
    common = dict(sources=(str(prompts_file),), max_new_tokens=16, batch_size=8, steps=16,
                  dtype="float32", device="cpu")
    run_build(BuildOptions(split="rl", model=str(wide), samples_per_prompt=2,
                           out=str(root / "wide"), **common))
    run_build(BuildOptions(split="cot", model=str(tiny_model_dir), layers=(2, 3),
                           out=str(root / "layers"), **common))
    return root


def test_another_generator_hidden_size_or_layer_refuses_in_one_line(built, others, tmp_path):
    saved = tmp_path / "saved"
    for folder, name, extra in (("egtp", "egtp", []),
                                ("egtp-l1", "egtp", ["--predictor-args", "layer=1"]),
                                ("constant-median", "constant-median", [])):
        done = run("fit", "--predictor", name, "--data", str(built), "--config", CONFIG,
                   "--out", str(saved / folder), *extra)
        assert done.returncode == 0, done.stderr
    results = tmp_path / "results"

    def score(name, data, config):
        return run("evaluate", "--from", str(saved / name), "--data", str(data), "--config",
                   config, "--results", str(results))

    line = one_line_error(score("egtp", others / "wide", "tiny-llama-48-rl"))
    assert "reads hidden states of size 32" in line and "holds size 48" in line
    line = one_line_error(score("constant-median", others / "wide", "tiny-llama-48-rl"))
    assert "fitted on lengths generated by" in line and "tiny-llama-48" in line
    line = one_line_error(score("egtp-l1", others / "layers", "tiny-llama-cot"))
    assert "reads egtp_l1" in line and "layer 1" in line
    assert "recorded layers of tiny-llama-cot: 2, 3" in line
    assert not results.exists()
    # the same generator's other config, holding the layer egtp read (3): scored, under a key
    # that says where it was fitted
    done = score("egtp", others / "layers", "tiny-llama-cot")
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(p.read_text()) for p in (results / "tiny-llama-cot").glob("*.json")]
    assert record["predictor"]["key"] == f"egtp+fit-{CONFIG}"
    assert record["protocol"]["fit"].startswith(f"train of {CONFIG}")


def test_fit_refusals_are_one_line_and_write_nothing(built, tmp_path):
    out = tmp_path / "egtp"
    line = one_line_error(run("fit", "--predictor", "all", "--data", str(built), "--config",
                              CONFIG, "--out", str(out)))
    assert "fit saves one predictor" in line
    line = one_line_error(run("fit", "--predictor", "egtp", "--data", str(built), "--config",
                              "tiny-llama-rll", "--out", str(out)))
    assert "did you mean 'tiny-llama-rl'" in line
    line = one_line_error(run("fit", "--predictor", "egtp", "--data", str(built), "--config",
                              CONFIG, "--out", str(out), "--predictor-args", "decode=modal"))
    assert "decode must be" in line
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    line = one_line_error(run("fit", "--predictor", "egtp", "--data", str(built), "--config",
                              CONFIG, "--out", str(out)))
    assert "already exists; pass --overwrite" in line
    line = one_line_error(run("evaluate", "--from", str(out), "--predictor", "egtp"))
    assert "--predictor does not go with it" in line
    line = one_line_error(run("evaluate", "--from", str(tmp_path / "none")))
    assert "no saved predictor at" in line
    line = one_line_error(run("evaluate", "--data", str(built)))
    assert "give --predictor NAME" in line


def test_evaluate_from_refuses_another_seed(built, tmp_path):
    saved = tmp_path / "cm"
    assert run("fit", "--predictor", "constant-median", "--data", str(built), "--config", CONFIG,
               "--out", str(saved)).returncode == 0
    line = one_line_error(run("evaluate", "--from", str(saved), "--seed", "3", "--results",
                              str(tmp_path / "r")))
    assert "fitted with seed 42" in line
    assert not (tmp_path / "r").exists()


def test_a_plugin_saves_and_a_bare_save_is_not_scored(built, tmp_path):
    from test_plugins import PLUGIN

    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    spec = f"{plugin}:ScaledPromptLength"
    saved = tmp_path / "plugin"
    done = run("fit", "--predictor", spec, "--data", str(built), "--config", CONFIG, "--out",
               str(saved), "--predictor-args", "scale=2.0")
    assert done.returncode == 0, done.stderr
    meta = json.loads((saved / "predictor.json").read_text())
    assert meta["predictor"]["spec"] == spec and meta["predictor"]["origin"]["kind"] == "file"
    assert meta["predictor"]["params"]["scale"] == 2.0
    refit = run("evaluate", "--predictor", spec, "--predictor-args", "scale=2.0", "--data",
                str(built), "--config", CONFIG, "--results", str(tmp_path / "refit"))
    loaded = run("evaluate", "--from", str(saved), "--results", str(tmp_path / "loaded"))
    assert refit.returncode == 0 and loaded.returncode == 0, loaded.stderr
    (a,) = (tmp_path / "refit" / CONFIG).glob("*.json")
    (b,) = (tmp_path / "loaded" / CONFIG).glob("*.json")
    assert a.name == b.name and a.name.startswith("scaled-prompt-length@")
    assert json.loads(a.read_text())["predictions_sha256"] == json.loads(b.read_text())[
        "predictions_sha256"]
    # Predictor.save alone does not know what it was fitted on: loadable, not scorable
    Predictor.load(saved).save(tmp_path / "bare")
    line = one_line_error(run("evaluate", "--from", str(tmp_path / "bare")))
    assert "saved without the dataset it was fitted on" in line


def test_pia_saves_its_generator_by_name(tiny_model_dir, tmp_path):
    from test_pia import PROMPTS, _table
    from transformers import AutoTokenizer

    from forelen.predictors.pia import PIA

    table = _table(AutoTokenizer.from_pretrained(tiny_model_dir), PROMPTS[:6])
    pred = PIA(model=str(tiny_model_dir), max_new_tokens=4, dtype="float32", device="cpu")
    pred.fit(table, np.arange(6, dtype=np.float64) * 10)
    before = pred.predict(table)
    pred.save(tmp_path / "pia")
    meta = json.loads((tmp_path / "pia" / "predictor.json").read_text())
    assert meta["state"]["model_spec_"] == str(tiny_model_dir)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys, numpy as np
        from forelen.predictors import Predictor
        sys.path.insert(0, sys.argv[3])
        from test_pia import PROMPTS, _table
        from transformers import AutoTokenizer
        table = _table(AutoTokenizer.from_pretrained(sys.argv[2]), PROMPTS[:6])
        np.save(sys.argv[4], Predictor.load(sys.argv[1]).predict(table))
        """), str(tmp_path / "pia"), str(tiny_model_dir), str(TESTS),
                           str(tmp_path / "pia.npy")], capture_output=True, text=True,
                          timeout=300, env=cli_env())
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "pia.npy").tobytes() == before.tobytes()

