"""Leaderboard releases and the rendered page (src/forelen/leaderboard/release.py, render.py, plots.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
from leaderboard_records import CONFIGS, EVIL, PREDICTORS, make_record, write_results

from forelen import cli
from forelen.errors import ForelenError
from forelen.leaderboard import release as rel
from forelen.leaderboard.freeze import make_release
from forelen.leaderboard.plots import histogram, line_plot, nice_ticks
from forelen.leaderboard.ranking import metric_ranks
from forelen.leaderboard.render import read_card, render_command, render_page


@pytest.fixture
def results(tmp_path) -> Path:
    return write_results(tmp_path / "results", tmp_path / "data")


def call_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["forelen", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")] if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# releases


def test_release_freezes_records_manifest_and_page(results, tmp_path):
    dest = make_release("v1.0", results, tmp_path / "releases", notes="first release")
    assert dest == tmp_path / "releases" / "v1.0"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["release"] == "v1.0" and manifest["supersedes"] is None
    assert manifest["notes"] == "first release"
    assert manifest["forelen_version"] and "git_commit" in manifest and manifest["created_at"]
    assert manifest["record_version"] == 1 and manifest["schema_version"] == 1
    assert sorted(manifest["configs"]) == list(CONFIGS)
    block = manifest["configs"]["tiny-cot"]
    assert block["path"] == str(tmp_path / "data") and block["fingerprint"]
    assert {"repo", "revision", "model", "split"} <= set(block)
    assert sum(block["length_histogram"]["counts"]) == block["length_histogram"]["rows"] == 40
    ranks = block["significance"]["predictors"]
    assert block["significance"]["test"]["level"] == 0.95 and ranks["egtp"]["rank"] >= 1
    assert len(manifest["records"]) == len(CONFIGS) * len(PREDICTORS)
    for path, info in manifest["records"].items():
        copied = (dest / path).read_bytes()
        assert copied == (results / path.removeprefix("records/")).read_bytes()
        assert hashlib.sha256(copied).hexdigest() == info["sha256"]
    page = (dest / "index.html").read_text()
    assert "ForeLen leaderboard v1.0" in page and "first release" in page
    readme = (dest / "README.md").read_text()
    assert "sdk: static" in readme and "app_file: index.html" in readme
    assert not os.access(dest / "manifest.json", os.W_OK) or os.geteuid() == 0
    assert (dest / "manifest.json").stat().st_mode & 0o222 == 0
    assert leftovers(tmp_path / "releases") == []


def test_release_refuses_an_existing_version_and_keeps_it(results, tmp_path):
    dest = make_release("v1.0", results, tmp_path / "releases")
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    (results / "tiny-cot" / "egtp.json").write_text(
        json.dumps(make_record("tiny-cot", "egtp", json.loads(
            (results / "tiny-cot" / "plp.json").read_text())["dataset"]["fingerprint"], None)))
    with pytest.raises(ForelenError, match=r"v1\.0 already exists.*never overwritten.*--supersedes"):
        make_release("v1.0", results, tmp_path / "releases")
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before


def test_correction_supersedes_an_existing_release(results, tmp_path):
    out = tmp_path / "releases"
    make_release("v1.0", results, out)
    with pytest.raises(ForelenError, match=r"--supersedes v0\.9: no release v0\.9"):
        make_release("v1.1", results, out, supersedes="v0.9")
    with pytest.raises(ForelenError, match="cannot supersede itself"):
        make_release("v1.1", results, out, supersedes="v1.1")
    dest = make_release("v1.1", results, out, supersedes="v1.0")
    assert json.loads((dest / "manifest.json").read_text())["supersedes"] == "v1.0"
    assert "supersedes <strong>v1.0</strong>" in (dest / "index.html").read_text()


@pytest.mark.parametrize("version", ["1.0", "v1", "v1.0-rc1", "latest", "", "v1.0/../x"])
def test_release_version_format(results, tmp_path, version):
    with pytest.raises(ForelenError, match="is not of the form vX.Y"):
        make_release(version, results, tmp_path / "releases")
    assert not (tmp_path / "releases").exists()


def test_records_disagreeing_on_fingerprint_are_refused_naming_the_files(results, tmp_path):
    path = results / "tiny-rl" / "tpv.json"
    record = json.loads(path.read_text())
    record["dataset"]["fingerprint"] = "f" * 64
    path.write_text(json.dumps(record))
    with pytest.raises(ForelenError) as info:
        make_release("v1.0", results, tmp_path / "releases")
    message = str(info.value)
    assert "dataset fingerprint of config tiny-rl" in message and str(path) in message
    assert str(results / "tiny-rl" / "egtp.json") in message
    assert "\n" not in message
    assert not (tmp_path / "releases" / "v1.0").exists() and leftovers(tmp_path / "releases") == []


@pytest.mark.parametrize("field", ["schema_version", "record_version"])
def test_records_disagreeing_on_versions_are_refused(results, tmp_path, field):
    path = results / "tiny-cot" / "egtp.json"
    record = json.loads(path.read_text())
    if field == "schema_version":
        record["dataset"]["schema_version"] = 2
    else:
        record["record_version"] = 2
    path.write_text(json.dumps(record))
    label = "dataset schema version" if field == "schema_version" else "record version"
    with pytest.raises(ForelenError, match=f"records disagree on the {label}: .*egtp.json"):
        make_release("v1.0", results, tmp_path / "releases")


def test_unreadable_or_missing_records(tmp_path):
    with pytest.raises(ForelenError, match="no results folder"):
        rel.load_records(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ForelenError, match="no result records"):
        rel.load_records(tmp_path / "empty")
    bad = tmp_path / "bad" / "cfg" / "x.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ForelenError, match=r"x\.json is not a forelen result record"):
        rel.load_records(tmp_path / "bad")
    (bad.parent / ".tmp-123.json").write_text("partial")  # an interrupted write is skipped
    bad.unlink()
    with pytest.raises(ForelenError, match="no result records"):
        rel.load_records(tmp_path / "bad")


def test_interrupted_release_leaves_nothing(results, tmp_path, monkeypatch):
    from forelen.leaderboard import render

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    real_rename = os.rename
    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(KeyboardInterrupt):
        make_release("v1.0", results, tmp_path / "releases")
    assert not (tmp_path / "releases" / "v1.0").exists()
    assert leftovers(tmp_path / "releases") == []
    monkeypatch.setattr(os, "rename", real_rename)
    monkeypatch.setattr(render, "render_page", boom)
    with pytest.raises(KeyboardInterrupt):
        make_release("v1.0", results, tmp_path / "releases")
    assert list((tmp_path / "releases").iterdir()) == []


def test_release_reads_notes_from_a_file(results, tmp_path):
    notes = tmp_path / "NOTES.md"
    notes.write_text("Corrected the rl records.\n")
    dest = make_release("v2.0", results, tmp_path / "releases", notes=str(notes))
    assert json.loads((dest / "manifest.json").read_text())["notes"] == "Corrected the rl records."


# ---------------------------------------------------------------------------------------------
# the page


def page_of(results: Path) -> str:
    loaded = rel.load_records(results)
    return render_page([r.body for r in loaded], rel.build_manifest(loaded, None))


def rows_of(page: str, table_id: str) -> list[str]:
    body = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<td class="name l" data-v="([^"]+)"', body)


def test_page_ranks_by_mean_mae_rank_and_never_ranks_references(results):
    page = page_of(results)
    # MAE ranks: cot plp 1, egtp 2, constant 3, tpv 4; rl egtp 1, tpv 2, plp 3, constant 4.
    assert rows_of(page, "overview-table") == ["egtp", "plp", "tpv", "constant-median", "ltr",
                                               "group-median-oracle"]
    overview = page.split('id="overview-table"', 1)[1].split("</table>", 1)[0]
    oracle_row = overview.split('data-v="group-median-oracle"')[0].rsplit("<tr", 1)[1]
    assert 'class="oracle' in oracle_row
    assert "oracle ref." in overview and "ranking only" in overview and "baseline" in overview
    ltr = overview.split('data-v="ltr"', 1)[1].split("</tr>", 1)[0]
    assert ltr.count('data-v=""') >= 3  # no MAE rank, no MAE
    assert 'data-v="0.3"' in ltr  # shown by its Kendall tau
    assert rows_of(page, "acc-tiny-cot") == ["plp", "egtp", "constant-median", "tpv", "ltr",
                                             "group-median-oracle"]


def test_an_exact_oracle_says_why_its_mae_is_zero(results):
    """The group-median oracle scores 0 where each group holds one row (one sample per prompt):
    the page says so beside the 0, and only there."""
    page = page_of(results)
    overview = page.split('id="overview-table"', 1)[1].split("</table>", 1)[0]
    oracle = overview.split('data-v="group-median-oracle"', 1)[1].split("</tr>", 1)[0]
    assert oracle.count('title="MAE 0 by construction') == 1  # tiny-cot's 0.0, not tiny-rl's 4.0
    cot = page.split('id="acc-tiny-cot"', 1)[1].split("</table>", 1)[0]
    rl = page.split('id="acc-tiny-rl"', 1)[1].split("</table>", 1)[0]
    assert "MAE 0 by construction: one row per group" in cot
    assert "by construction" not in rl


def test_page_has_every_section(results):
    page = page_of(results)
    for config in CONFIGS:
        assert f'id="cfg-{config}"' in page and f'id="acc-{config}"' in page
        for mode in ("static", "continuous"):
            assert f'id="e2e-{config}-{mode}"' in page
    assert page.count('aria-label="output-length histogram of') == len(CONFIGS)
    assert page.count('aria-label="MAE versus observed step') == len(CONFIGS)
    assert page.count("<polyline") == 2 * len(CONFIGS)  # plp and tpv
    assert "rl static floor" in page
    assert "<code>mmath-pkg, gsm-symbolic</code> (packaged (offline fallback))" in page
    for name in PREDICTORS:
        assert f'id="card-{name}"' in page
    assert 'id="records-table"' in page and "preview of a results folder" in page
    e2e = page.split('id="e2e-tiny-cot-static"', 1)[1].split("</table>", 1)[0]
    assert "FCFS" in e2e and "oracle" in e2e and "×" in e2e


def test_page_without_end_to_end_or_dataset(tmp_path):
    results = write_results(tmp_path / "results", dataset=None, e2e=False)
    page = page_of(results)
    assert "carry no end-to-end scheduling results" in page and 'id="e2e-' not in page
    assert "was not available when this page was rendered" in page
    assert "<polyline" in page


def test_page_is_self_contained_and_escapes_data(tmp_path):
    results = write_results(tmp_path / "results", tmp_path / "data", evil=True)
    dest = make_release("v1.0", results, tmp_path / "releases", notes=EVIL)
    page = (dest / "index.html").read_text()
    assert "<b>bold</b>" not in page and 'alert("x")' not in page
    assert page.count("<script") == 2  # the manifest JSON and the sorting code, nothing injected
    assert "&lt;/script&gt;&lt;script&gt;alert" in page
    script = page.split('<script type="application/json" id="forelen-manifest">', 1)[1]
    script = script.split("</script>", 1)[0]
    assert "</" not in script and "<" not in script
    assert json.loads(script)["notes"] == EVIL
    for pattern in (r"<script[^>]+src=", r"<link[^>]+href=", r"@import", r"url\(", r"<img"):
        assert not re.search(pattern, page), pattern


def test_page_is_deterministic(results, tmp_path):
    a = render_command(None, str(results), str(tmp_path / "a.html"))
    b = render_command(None, str(results), str(tmp_path / "b.html"))
    assert a.read_bytes() == b.read_bytes()


def test_render_command_previews_results_and_releases(results, tmp_path, monkeypatch):
    assert render_command(None, str(results), None) == results / "index.html"
    dest = make_release("v1.0", results, tmp_path / "releases")
    with pytest.raises(ForelenError, match="frozen release"):
        render_command(str(dest), None, str(dest / "index.html"))
    monkeypatch.chdir(tmp_path)
    path = render_command(str(dest), None, None)
    assert path == Path("leaderboard-v1.0.html")
    assert path.read_bytes() == (dest / "index.html").read_bytes()  # same release, same bytes
    with pytest.raises(ForelenError, match="either a folder or --results"):
        render_command(str(dest), str(results), None)


def test_metric_ranks_share_ties():
    recs = [make_record("tiny-cot", n, "fp", None) for n in PREDICTORS]
    for r, mae in zip(recs, (10.0, 10.0, 30.0, 5.0, None, 0.0)):
        r["metrics"]["mae"] = mae
    assert metric_ranks(recs) == {"constant-median": 1, "egtp": 2.5, "plp": 2.5, "tpv": 4}
    recs[2]["metrics"]["mae"] = float("nan")  # a failed score is not ranked, and breaks nothing
    assert metric_ranks(recs) == {"constant-median": 1, "egtp": 2.5, "plp": 2.5}


def test_plot_geometry():
    assert nice_ticks(188) == [0, 50, 100, 150, 200]
    assert nice_ticks(0) == [0.0, 1.0]
    plot = line_plot({"a": [(0, 10.0), (64, 5.0), (8, None)]}, {"a": "#000"})
    assert [label for _, label in plot["xticks"]] == ["0", "64"]
    assert line_plot({"a": []}, {}) is None
    hist = histogram({"edges": [0, 128, 256], "counts": [3, 1], "max_new_tokens": 256})
    assert len(hist["bars"]) == 2 and hist["cap_x"] is not None
    assert histogram(None) is None


# ---------------------------------------------------------------------------------------------
# predictor cards


def front_matter(name: str) -> str:
    text = (Path(__file__).resolve().parents[1] / "src" / "forelen" / "cards" / "predictors"
            / f"{name}.md").read_text()
    assert text.startswith("---\n")
    return text[4:].split("\n---\n", 1)[0]


def test_every_registered_predictor_has_a_card():
    import yaml

    from forelen.predictors import PREDICTORS as REGISTRY

    for name, cls in REGISTRY.items():
        card = read_card(name)
        assert card is not None, f"src/forelen/cards/predictors/{name}.md is missing"
        meta = card["meta"]
        assert yaml.safe_load(front_matter(name)) == {
            k: (int(v) if k == "version" else v) for k, v in meta.items()}
        assert meta["name"] == name and meta["family"] == cls.info.family
        assert meta["version"] == cls.info.version, f"bump the card of {name} with its version"
        assert [c.strip() for c in meta["inputs"].split(",")] == list(cls.info.requires)
        assert meta["reference"] and meta["title"] and len(card["body"]) > 80


def test_cards_render_with_record_parameters(results):
    page = page_of(results)
    card = page.split('id="card-plp"', 1)[1].split('<div class="card"', 1)[0]
    assert "progressive length prediction" in card.lower()
    assert "<dt>layer</dt>" in card and "&#34;final&#34;" in card
    assert "egtp_l30" in card


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_release_and_render(results, tmp_path, monkeypatch, capsys):
    out = tmp_path / "releases"
    code, stdout, err = call_main(monkeypatch, capsys, "leaderboard", "release", "v1.0",
                                  "--results", str(results), "--out", str(out))
    assert code == 0, err
    assert stdout.strip() == str(out / "v1.0" / "index.html")
    code, _, err = call_main(monkeypatch, capsys, "leaderboard", "release", "v1.0",
                             "--results", str(results), "--out", str(out))
    assert "already exists" in one_line_error(code, err)
    code, _, err = call_main(monkeypatch, capsys, "leaderboard", "release", "1.0",
                             "--results", str(results), "--out", str(out))
    assert "vX.Y" in one_line_error(code, err)
    code, stdout, err = call_main(monkeypatch, capsys, "leaderboard", "render",
                                  "--results", str(results))
    assert code == 0, err
    assert stdout.strip() == str(results / "index.html")
    code, _, err = call_main(monkeypatch, capsys, "leaderboard", "render",
                             str(tmp_path / "missing"))
    assert "no results folder" in one_line_error(code, err)


def _sig_record(name: str, family: str, errors, groups):
    import numpy as np

    return {"predictor": {"name": name, "family": family, "outputs": "lengths", "ranked": True},
            "dataset": {"config": "c"}, "metrics": {"mae": float(np.mean(errors))},
            "per_row": {"abs_error": list(map(float, errors)), "group": list(groups),
                        "rows_sha256": "same"}}


def test_ranks_count_only_significantly_better_predictors():
    """rank = 1 + predictors significantly better; the constant is beaten or not, said so."""
    import numpy as np

    from forelen.leaderboard.ranking import significance
    from forelen.leaderboard.render import config_table

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 4)  # 50 prompts: enough to test
    base = np.repeat(rng.exponential(50, 50), 4) + rng.exponential(5, 200)
    recs = [_sig_record("constant-median", "reference", base, groups),
            _sig_record("good", "hidden-state", base * 0.6, groups),  # clearly better
            _sig_record("twin", "hidden-state", base * 0.6 + rng.normal(0, 0.5, 200), groups),
            _sig_record("noise", "text-proxy", base + rng.normal(0, 0.5, 200), groups)]
    sig = significance(recs)
    assert sig["good"]["rank"] == sig["twin"]["rank"] == 1  # not separable: they share rank 1
    assert sig["constant-median"]["rank"] == sig["noise"]["rank"] == 3
    assert sig["good"]["vs_ref"] == "better" and sig["noise"]["vs_ref"] == "n.s."
    assert sig["twin"]["vs_best"] in ("best", "n.s.") and sig["noise"]["vs_best"] == "worse"
    rows = {r["name"]: r for r in config_table(recs)}
    assert rows["noise"]["cols"][3]["text"] == "n.s."  # the page says it does not beat the ref.
    # records without per-row errors (older ones) fall back to the MAE order
    old = [dict(r, per_row=None) for r in recs]
    assert not significance(old)["good"]["tested"]


def test_release_refuses_records_with_another_seed_or_simulator_settings(results, tmp_path):
    path = next((results / "tiny-cot").glob("egtp.json"))
    body = json.loads(path.read_text())
    body["protocol"]["seed"] = 7
    path.write_text(json.dumps(body))
    with pytest.raises(ForelenError, match="disagree on the seed"):
        make_release("v9.0", results, tmp_path / "rel")
    body["protocol"]["seed"] = 42
    body["end_to_end"]["settings"]["slots"] = 99
    path.write_text(json.dumps(body))
    with pytest.raises(ForelenError, match="simulator settings"):
        make_release("v9.0", results, tmp_path / "rel")


def test_card_markdown_and_links_cannot_inject_script():
    from forelen.leaderboard.render import _safe_url, markdown

    html = str(markdown("see [here](javascript:alert(1)) and <script>alert(2)</script> "
                        "<img src=x onerror=alert(3)> [ok](https://example.org)"))
    assert 'href="javascript' not in html and "<script" not in html and "<img" not in html
    assert 'href="https://example.org"' in html
    assert _safe_url("javascript:alert(1)") is None and _safe_url("data:text/html,x") is None
    assert _safe_url("https://arxiv.org/abs/1") == "https://arxiv.org/abs/1"


def test_too_few_prompts_are_never_called_significant():
    """One rl test prompt x 8 samples (the demo's size): the bootstrap has nothing to resample."""
    import numpy as np

    from forelen.leaderboard.ranking import significance
    from forelen.metrics import length_metrics

    groups = np.zeros(8, int)
    recs = [_sig_record("constant-median", "reference", np.full(8, 70.0), groups),
            _sig_record("egtp", "hidden-state", np.full(8, 10.0), groups)]
    sig = significance(recs)
    assert sig["egtp"]["rank"] == sig["constant-median"]["rank"] == 1
    assert sig["egtp"]["too_few_groups"] and not sig["egtp"]["tested"]
    assert length_metrics(np.arange(8.0), np.zeros(8), groups=groups)["mae_ci95"] is None


# ---------------------------------------------------------------------------------------------
# metrics a predictor does not produce: null, "–", never ranked


def _columns() -> dict[str, int]:
    """Metric key -> its column in a config table's row (`render.config_table`)."""
    from forelen.leaderboard.render import ACCURACY

    return {"mae": 1} | {k: 4 + i for i, (k, *_rest) in enumerate(ACCURACY) if i}


def _terminal_cells(recs) -> dict[str, dict[str, str]]:
    """predictor -> {column header: cell text} of the terminal table (`report.results_table`)."""
    from rich.console import Console

    from forelen.leaderboard.report import results_table

    console = Console(record=True, width=400, color_system=None)
    console.print(results_table(recs, "t", 400))
    lines = [[c.strip() for c in line.strip("│┃ ").split("│" if "│" in line else "┃")]
             for line in console.export_text().splitlines() if line.startswith(("│", "┃"))]
    head = lines[0]
    return {cells[0].split(" (")[0]: dict(zip(head, cells)) for cells in lines[1:]}


def test_a_metric_a_predictor_lacks_is_a_dash_and_takes_no_rank():
    """ltr (a ranking score) has no MAE: "–" on the page and in the terminal, no MAE rank, no
    pairwise MAE test, even where a record stored `mae: 0.0` for it. A point predictor has no
    CRPS; a distribution predictor shows its CRPS, coverage and width."""
    import numpy as np

    from forelen.leaderboard.ranking import significance
    from forelen.leaderboard.render import config_table

    recs = [make_record("tiny-cot", n, "fp", None) for n in PREDICTORS]
    ltr = next(r for r in recs if r["predictor"]["name"] == "ltr")
    ltr["metrics"]["mae"] = 0.0  # what a reader must never take for a perfect predictor
    groups = list(np.repeat(np.arange(20), 2))
    for r in recs:
        if r["predictor"]["outputs"] != "ranking":
            r["per_row"] = {"abs_error": [r["metrics"]["mae"]] * 40, "group": groups,
                            "rows_sha256": "same"}
    assert "ltr" not in metric_ranks(recs) and "ltr" not in significance(recs)
    assert set(significance(recs)) == {"egtp", "plp", "tpv", "constant-median"}
    col = _columns()
    rows = {r["name"]: r["cols"] for r in config_table(recs)}
    for key in ("mae", "rmse", "crps", "coverage_80", "interval_width_80"):
        assert rows["ltr"][col[key]]["text"] == "–" and rows["ltr"][col[key]]["v"] == ""
    assert rows["ltr"][0]["text"] == "–" and rows["ltr"][2]["text"] == "–"  # no rank, no CI
    assert rows["ltr"][col["kendall_tau"]]["text"] == "0.300"
    assert rows["egtp"][col["crps"]]["text"] == "28.0"  # 0.7 * MAE 40
    assert rows["egtp"][col["coverage_80"]]["text"] == "0.78"
    assert rows["egtp"][col["interval_width_80"]]["text"] == "120.0"
    assert rows["constant-median"][col["crps"]]["text"] == "–"
    assert rows["constant-median"][col["mae"]]["text"] == "50.0"

    term = _terminal_cells(recs)
    assert term["ltr"]["MAE"] == term["ltr"]["95% CI"] == term["ltr"]["RMSE"] == "–"
    assert term["ltr"]["CRPS"] == "–" and term["ltr"]["tau"] == "0.300"
    assert (term["egtp"]["CRPS"], term["egtp"]["cov80"], term["egtp"]["w80"]) == \
        ("28.0", "0.78", "120.0")
    assert term["constant-median"]["CRPS"] == term["constant-median"]["w80"] == "–"
    assert term["constant-median"]["MAE"] == "50.0"
    assert list(term)[-2:] == ["ltr", "group-median-oracle"]  # no MAE: after every MAE


def test_page_headers_come_from_the_metric_schema(results):
    from forelen.metrics import METRICS

    html = render_page([json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))],
                       rel.build_manifest(rel.load_records(results), None))
    from markupsafe import escape

    for m in METRICS:  # a header per metric, its tip as the title
        assert f'title="{escape(m.tip)}">{escape(m.label)}</th>' in html, m.key
    assert html.count(">28.0</td>") >= 1  # egtp's CRPS in tiny-cot


def test_release_v0_1_0_renders_without_the_new_metrics():
    """The released records predate the distribution metrics (and keep ltr without MAE): read as
    null, shown as "–". The release itself is never rewritten."""
    from forelen.leaderboard.render import config_table

    folder = Path(__file__).resolve().parents[1] / "releases" / "v0.1.0" / "records"
    recs = [r.body for r in rel.load_records(folder) if r.body["dataset"]["config"]
            == "smollm2-135m-rl"]
    assert recs and all("crps" not in r["metrics"] for r in recs)
    col = _columns()
    rows = {r["name"]: r["cols"] for r in config_table(recs)}
    assert all(c[col["crps"]]["text"] == "–" and c[col["coverage_80"]]["text"] == "–"
               for c in rows.values())
    assert rows["ltr"][col["mae"]]["text"] == "–" and rows["ltr"][0]["text"] == "–"
    assert rows["egtp"][col["mae"]]["text"] != "–" and rows["egtp"][0]["text"] != "–"


# ---------------------------------------------------------------------------------------------
# records made from a dirty tree


def _make_dirty(results: Path, *rels: str) -> None:
    for rel_path in rels:
        path = results / rel_path
        body = json.loads(path.read_text())
        body["git_commit"] = "0123abc+dirty"
        path.write_text(json.dumps(body))


def test_release_refuses_records_from_a_dirty_tree(results, tmp_path, monkeypatch, capsys):
    """A +dirty commit does not name the code that made a record: one line, exit 2, naming how
    many, the first, and the flag; nothing is written."""
    first, second = f"{CONFIGS[0]}/egtp.json", f"{CONFIGS[1]}/plp.json"
    _make_dirty(results, second, first)
    out = tmp_path / "releases"
    code, _, err = call_main(monkeypatch, capsys, "leaderboard", "release", "v1.0",
                             "--results", str(results), "--out", str(out))
    line = one_line_error(code, err)
    total = len(list(results.glob("*/*.json")))
    assert f"2 of {total} records were made from a dirty tree" in line
    assert str(results / first) in line and "0123abc+dirty" in line and "--allow-dirty" in line
    assert not out.exists() or not list(out.iterdir())
    with pytest.raises(ForelenError, match="dirty tree"):
        make_release("v1.0", results, out)


def test_allow_dirty_releases_and_lists_the_dirty_records(results, tmp_path, monkeypatch, capsys):
    _make_dirty(results, f"{CONFIGS[0]}/egtp.json")
    out = tmp_path / "releases"
    code, _, err = call_main(monkeypatch, capsys, "leaderboard", "release", "v1.0", "--results",
                             str(results), "--out", str(out), "--notes", "first release",
                             "--allow-dirty")
    assert code == 0, err
    manifest = json.loads((out / "v1.0" / "manifest.json").read_text())
    assert manifest["dirty_records"] == [{"record": f"records/{CONFIGS[0]}/egtp.json",
                                          "predictor": "egtp", "config": CONFIGS[0],
                                          "git_commit": "0123abc+dirty"}]
    notes = manifest["notes"]
    assert notes.startswith("first release\n") and "## Records from a dirty tree" in notes
    assert f"| egtp | {CONFIGS[0]} | `0123abc+dirty` |" in notes
    assert "dirty_records" in (out / "v1.0" / "README.md").read_text()
    assert "Records from a dirty tree" in (out / "v1.0" / "index.html").read_text()


def test_clean_records_release_without_a_dirty_list(results, tmp_path):
    """The synthetic records name a clean commit (not the test tree's, which may be dirty)."""
    dest = make_release("v1.0", results, tmp_path / "releases", notes="first release")
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["dirty_records"] == [] and manifest["notes"] == "first release"
    assert "dirty_records" not in (dest / "README.md").read_text()


# ---------------------------------------------------------------------------------------------
# flags: constant predictors, fallbacks; each config's plain reading; mean tau without oracles


def _flag_records():
    """constant-median, a clearly better learned predictor, a no-better one, and a constant in
    disguise that happens to score well (it must still not count)."""
    import numpy as np

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 4)
    base = np.repeat(rng.exponential(50, 50), 4) + rng.exponential(5, 200)
    recs = [_sig_record("constant-median", "reference", base, groups),
            _sig_record("good", "hidden-state", base * 0.6, groups),
            _sig_record("noise", "text-proxy", base + rng.normal(0, 0.5, 200), groups),
            _sig_record("flat", "text-proxy", base * 0.5, groups)]
    for r in recs:
        r["metrics"] |= {"kendall_tau": 0.3, "prediction_spread": 0.4}
    recs[0]["metrics"] |= {"kendall_tau": None, "prediction_spread": 0.0}  # a reference: no flag
    recs[3]["metrics"] |= {"kendall_tau": 0.01, "prediction_spread": 0.004,
                           "prediction_median": 230.4}
    return recs


def test_a_constant_predictor_is_flagged_and_not_ranked():
    from forelen.leaderboard.ranking import flags, significance, summary
    from forelen.leaderboard.render import config_table

    recs = _flag_records()
    got = flags(recs)
    assert list(got) == ["flat"] and got["flat"][0]["flag"] == "constant"
    assert "around 230" in got["flat"][0]["title"]
    sig = significance(recs)
    assert "flat" not in sig and "flat" not in metric_ranks(recs)
    assert sig["good"]["rank"] == 1  # the constant, though lower in MAE, counts in no rank
    rows = {r["name"]: r for r in config_table(recs)}
    rank = rows["flat"]["cols"][0]
    assert rank["text"] == "–" and "not ranked" in rank["title"]
    assert [f["text"] for f in rows["flat"]["flags"]] == ["constant"]
    assert list(rows)[-1] == "flat"  # after every ranked predictor
    text = summary(recs)
    mae = {r["predictor"]["name"]: r["metrics"]["mae"] for r in recs}
    assert text.startswith(f"1 learned predictor beats constant-median (MAE "
                           f"{mae['constant-median']:,.1f}) significantly; the best is good (MAE "
                           f"{mae['good']:,.1f}).")
    assert text.endswith("flat predicts a constant and is not ranked.")
    recs[3]["metrics"]["prediction_spread"] = 0.02  # above CONSTANT_SPREAD: an ordinary predictor
    assert flags(recs) == {} and significance(recs)["flat"]["rank"] == 1


def test_the_summary_says_when_no_learned_predictor_beats_the_reference():
    from forelen.leaderboard.ranking import summary

    recs = [r for r in _flag_records() if r["predictor"]["name"] in ("constant-median", "noise")]
    mae = {r["predictor"]["name"]: r["metrics"]["mae"] for r in recs}
    assert summary(recs) == (f"No learned predictor beats constant-median (MAE "
                             f"{mae['constant-median']:,.1f}) significantly; the closest is noise "
                             f"(MAE {mae['noise']:,.1f}).")
    # the oracle is never the baseline, and a record without per-row errors is not tested
    oracle = _sig_record("group-median-oracle", "reference", [0.0] * 200, list(range(200)))
    oracle["predictor"]["ranked"] = False
    untested = [dict(r, per_row=None) for r in recs] + [oracle]
    assert summary(untested).startswith("Not tested (records without per-row errors): the "
                                        "lowest learned MAE is noise's")
    assert "group-median-oracle" not in summary(untested)


def test_records_without_a_prediction_spread_are_judged_by_tau_and_modal_class():
    """v0.1.0's records store neither predictions nor targets: a learned predictor whose tau was
    left undefined (its predictions did not vary) while others have one is constant, and so is
    one class on every row (ltr-c's `modal_class_rate`)."""
    from forelen.leaderboard.ranking import constants

    recs = [make_record("tiny-cot", n, "fp", None) for n in PREDICTORS]
    assert constants(recs) == set()
    egtp, plp, cm = (next(r for r in recs if r["predictor"]["name"] == n)
                     for n in ("egtp", "plp", "constant-median"))
    egtp["metrics"]["kendall_tau"] = None
    plp["diagnostics"] = {"modal_class_rate": 1.0}
    cm["metrics"]["kendall_tau"] = None  # a reference is a constant by design: never flagged
    assert constants(recs) == {"egtp", "plp"}
    for r in recs:  # every tau undefined: the targets themselves do not vary; say nothing
        r["metrics"]["kendall_tau"] = None
    assert constants(recs) == {"plp"}


def test_flags_and_the_summary_are_on_the_page_and_in_the_terminal(results):
    for name, change in (("egtp", {"diagnostics": {"parse_failure_rate": 0.7}}),
                         ("tpv", {"diagnostics": {"parse_failure_rate": 0.4}}),
                         ("plp", {"metrics": {"prediction_spread": 0.0}})):
        path = results / "tiny-cot" / f"{name}.json"
        body = json.loads(path.read_text())
        for key, value in change.items():
            body[key] = (body.get(key) or {}) | value
        path.write_text(json.dumps(body))
    page = page_of(results)
    cot = page.split('id="acc-tiny-cot"', 1)[1].split("</table>", 1)[0]
    egtp = cot.split('data-v="egtp"', 1)[1].split("</tr>", 1)[0]
    assert '<span class="badge flag fallback" title="falls back to the train median on 70% of ' \
           'the test rows (parse failure rate)">fallback 70%</span>' in egtp
    assert "badge flag" not in cot.split('data-v="tpv"', 1)[1].split("</tr>", 1)[0]  # 40%
    plp = cot.split('data-v="plp"', 1)[1].split("</tr>", 1)[0]
    assert ">constant</span>" in plp
    assert cot.split('data-v="plp"', 1)[0].rsplit("<tr", 1)[1].count('data-v=""') == 1  # no rank
    overview = page.split('id="overview-table"', 1)[1].split("</section>", 1)[0]
    assert "fallback 70%" in overview and ">constant</span>" in overview
    assert "plp predicts a constant and is not ranked." in page
    section = page.split('id="cfg-tiny-cot"', 1)[1]
    assert '<p class="summary">' in section.split("<h3>Accuracy</h3>", 1)[0]
    term = _terminal_cells([json.loads(p.read_text())
                            for p in (results / "tiny-cot").glob("*.json")])
    assert "egtp (fallback 70%)" in {c["predictor"] for c in term.values()}
    assert "plp (constant)" in {c["predictor"] for c in term.values()}


def test_mean_tau_leaves_the_oracle_out(results):
    from forelen.leaderboard.render import by_config, mean_tau

    recs = [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]
    got = mean_tau(by_config(recs))
    taus = {(r["dataset"]["config"], r["predictor"]["name"]): r["metrics"]["kendall_tau"]
            for r in recs}
    others = [t for (c, n), t in taus.items() if n != "group-median-oracle"]
    learned = [t for (c, n), t in taus.items() if n not in ("group-median-oracle",
                                                             "constant-median")]
    assert got["without_oracles"] == pytest.approx(sum(others) / len(others))
    assert got["learned"] == pytest.approx(sum(learned) / len(learned))
    assert got["oracles"] == pytest.approx((0.5 + 0.48) / 2)
    page = page_of(results)
    assert f"oracle references left out: <strong>{got['without_oracles']:.3f}</strong>" in page


def test_release_v0_1_0_flags_its_constants_and_fallbacks():
    """The audit's reading of v0.1.0: ltr-c (cot, rl) and s3 (cot) predict a constant, pia falls
    back to the median on 69-77% of rows, and on cot and rl no learned predictor beats the
    constant median."""
    from forelen.leaderboard.ranking import flags, keyed, significance, summary
    from forelen.leaderboard.render import by_config, mean_tau, rank_cell

    folder = Path(__file__).resolve().parents[1] / "releases" / "v0.1.0" / "records"
    groups = by_config([keyed(r.body) for r in rel.load_records(folder)])
    got = {c.rsplit("-", 1)[1]: {n: [f["flag"] for f in fs] for n, fs in flags(rs).items()}
           for c, rs in groups.items()}
    assert got == {"cot": {"ltr-c": ["constant"], "s3": ["constant"], "pia": ["fallback"]},
                   "rl": {"ltr-c": ["constant"], "pia": ["fallback"]},
                   "long": {"pia": ["fallback"]}}
    said = {c.rsplit("-", 1)[1]: summary(rs) for c, rs in groups.items()}
    for config in ("cot", "rl"):
        assert said[config].startswith("No learned predictor beats constant-median"), said
    # with Holm over every pair (78 on long), 8 of the 10 that beat it uncorrected still do
    assert said["long"].startswith("8 learned predictors beat prompt-length"), said
    sig = significance(groups["smollm2-135m-cot"])
    for name, v in sig.items():  # the published rank lies in its range over the 30 seeds
        lo, hi = v["rank_interval"]
        assert lo <= v["rank"] <= hi and 0 < v["rank_stability"] <= 1, (name, v)
    assert sig["plp"]["rank_interval"] == [2, 5] and sig["plp"]["rank_stability"] < 0.5
    assert rank_cell(sig["plp"], sig["plp"]["rank"])["text"] == "3 (2–5)"
    assert rank_cell(sig["egtp"], sig["egtp"]["rank"])["text"] == "3"  # stable: one number
    assert mean_tau(groups)["oracles"] == pytest.approx(0.767, abs=1e-3)
    assert mean_tau(groups)["without_oracles"] < 0.25
