"""The leaderboard page: result records + release manifest -> one self-contained `index.html`.

Inline CSS, JS and SVG only (no CDN: it opens from disk and from a static hub Space). Jinja2
autoescapes every value taken from records and cards; JSON embedded in a <script> has `<`, `>` and
`&` escaped so no record can close the script. Nothing time-dependent is rendered except what the
manifest holds, so the same release renders to the same bytes.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import re
from pathlib import Path

from forelen.dataset import atomic_write_bytes
from forelen.errors import ForelenError
from forelen.leaderboard import plots
from forelen.leaderboard.ranking import (FALLBACK_RATE, SIGNIFICANCE, STABILITY_SEEDS, flags, keyed,
                                         kind, metric_ranks, significance, summary)
from forelen.leaderboard.paper import side_by_side
from forelen.leaderboard.release import MANIFEST, RECORDS, build_manifest, load_records
# the one list of metrics (terminal, page, ranking); `metric_value` reads a record's metric as a
# finite number or None (absent in an older record, or not produced: shown as "–", never ranked)
from forelen.metrics import (CONSTANT_SPREAD, METRICS, MIN_GROUPS, ORDER_METRIC, PAPER_METRIC,
                             RANKED, RANKED_BY, metric_value)

ACCURACY = tuple((m.key, m.label, m.digits, m.tip) for m in METRICS)  # key, header, digits, tip
E2E = (  # metric (also the key of its ratios), group header, unit, digits
    ("throughput_tok_s", "throughput", "tok/s", 1),
    ("jct_mean_s", "average JCT", "s", 2),
    ("jct_p90_s", "p90 JCT", "s", 2),
    ("padding_ratio", "padding ratio", "", 3),
)
KIND_ORDER = {"ranked": 0, "ranking": 1, "oracle": 2}
MODES = ("static", "continuous")  # page order; other modes follow alphabetically


# an oracle reference with MAE exactly 0 has read each row's own length: in a config with one sample
# per prompt (cot, long), the group median of the group-median oracle is the row's own length
EXACT_ORACLE = ("MAE 0 by construction: each group holds one row here (one sample per prompt), "
                "so the oracle returns the row's own true length")


def cell(value, digits: int = 1, suffix: str = "") -> dict:
    """What a table cell shows and the raw value it sorts by ("" sorts last)."""
    if value is None or (isinstance(value, float) and value != value):
        return {"text": "–", "v": ""}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"text": f"{value:,.{digits}f}{suffix}", "v": repr(float(value))}
    return {"text": str(value), "v": str(value)}


def by_config(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r["dataset"]["config"], r["predictor"]["name"])):
        out.setdefault(r["dataset"]["config"], []).append(r)
    return out


def overview(groups: dict[str, list[dict]]) -> list[dict]:
    """One row per predictor: mean significance rank over the configs it was scored on."""
    ranks = {c: {n: v["rank"] for n, v in significance(rs).items()} for c, rs in groups.items()}
    flagged = {c: flags(rs) for c, rs in groups.items()}
    rows: dict[str, dict] = {}
    for config, recs in groups.items():
        for r in recs:
            p = r["predictor"]
            row = rows.setdefault(p["name"], {"name": p["name"], "family": p.get("family"),
                                              "kind": kind(p), "cells": {}, "ranks": [], "taus": [],
                                              "raised": {}})
            for f in flagged[config].get(p["name"], []):
                row["raised"].setdefault(f["flag"], []).append((config, f))
            rank = ranks[config].get(p["name"])
            row["cells"][config] = {"value": metric_value(r, RANKED_BY), "rank": rank}
            if rank is not None:
                row["ranks"].append(rank)
            if metric_value(r, ORDER_METRIC) is not None:
                row["taus"].append(metric_value(r, ORDER_METRIC))
    for row in rows.values():
        row["avg_rank"] = sum(row["ranks"]) / len(row["ranks"]) if row["ranks"] else None
        row["tau"] = sum(row["taus"]) / len(row["taus"]) if row["taus"] else None
        row["coverage"] = f"{len(row['cells'])}/{len(groups)}"
        row["flags"] = overview_flags(row.pop("raised"))
    out = sorted(rows.values(), key=lambda r: (KIND_ORDER[r["kind"]], r["avg_rank"] is None,
                                               r["avg_rank"] or 0, -(r["tau"] or -2), r["name"]))
    place = 0
    for row in out:
        row["place"] = (place := place + 1) if row["avg_rank"] is not None else None
        row["cols"] = [cell(row["place"], 0), cell(row["avg_rank"], 2)]
        for config in groups:
            c = row["cells"].get(config)
            row["cols"].append(cell(c["value"] if c else None, RANKED.digits))
            if row["kind"] == "oracle" and c and c["value"] == 0:
                row["cols"][-1]["title"] = EXACT_ORACLE
        row["cols"] += [cell(row["tau"], 3), cell(row["coverage"])]
        if row["kind"] == "oracle":
            row["cols"][-2]["title"] = "reads true lengths: left out of the mean τ over predictors"
    return out


def overview_flags(raised: dict[str, list]) -> list[dict]:
    """A predictor's flags over configs, one badge per kind of flag, naming the configs."""
    out = []
    for flag, hits in sorted(raised.items()):
        where = ", ".join(c for c, _ in hits)
        if flag == "constant":
            out.append({"flag": flag, "text": "constant",
                        "title": f"(nearly) constant predictions on {where}: not ranked there"})
        else:
            low, high = (round(100 * f(x["rate"] for _, x in hits)) for f in (min, max))
            span = f"{low}%" if low == high else f"{low}–{high}%"
            out.append({"flag": flag, "text": f"fallback {span}",
                        "title": f"falls back to {hits[0][1]['to']} on {span} of the test rows "
                                 f"({where})"})
    return out


def mean_tau(groups: dict[str, list[dict]]) -> dict:
    """Kendall tau averaged over every (config, predictor) record that has one: without the oracle
    references (which read true lengths and would inflate it), over learned predictors only, and
    over the oracles alone, so the page can say what each is."""
    def mean(keep):
        taus = [metric_value(r, ORDER_METRIC) for rs in groups.values() for r in rs if keep(r)]
        taus = [t for t in taus if t is not None]
        return sum(taus) / len(taus) if taus else None

    return {"without_oracles": mean(lambda r: kind(r["predictor"]) != "oracle"),
            "learned": mean(lambda r: kind(r["predictor"]) != "oracle"
                            and r["predictor"].get("family") != "reference"),
            "oracles": mean(lambda r: kind(r["predictor"]) == "oracle")}


def _table_order(ranks: dict[str, float]):
    """Ranked predictors by MAE rank, then ranking-only ones, then oracle references."""
    return lambda name, k: (KIND_ORDER[k], ranks.get(name, math.inf), name)


VERDICT_ORDER = {"better": "0", "best": "0", "n.s.": "1", "worse": "2"}


def verdict(sig: dict | None, key: str) -> dict:
    """The significance cell: vs the best reference, or vs the best predictor."""
    text = (sig or {}).get(key)
    if text is None:
        return cell(None)
    other = sig["best_ref"] if key == "vs_ref" else sig["best"]
    label = {"better": "better", "worse": "worse", "n.s.": "n.s.", "best": "best"}[text]
    return {"text": label, "v": VERDICT_ORDER[text],
            "title": f"vs {other}: " + {"better": "significantly lower MAE",
                                        "worse": "significantly higher MAE",
                                        "n.s.": "no significant difference",
                                        "best": "lowest MAE"}[text]}


def rank_cell(sig: dict | None, rank) -> dict:
    """The rank, or its range over the bootstrap seeds where that is not one rank."""
    c = cell(rank, 0)
    lo, hi = (sig or {}).get("rank_interval") or (None, None)
    if rank is not None and lo is not None:
        share = sig["rank_stability"]
        c["title"] = (f"rank {rank} under {share:.0%} of {STABILITY_SEEDS} bootstrap seeds"
                      + (f"; {lo}–{hi} over all of them" if lo != hi else ""))
        if lo != hi:
            c["text"] = f"{rank} ({lo}–{hi})"
    return c


def config_table(recs: list[dict], sig: dict | None = None) -> list[dict]:
    sig = significance(recs) if sig is None else sig
    flagged = flags(recs)
    ranks = {name: v["rank"] for name, v in sig.items()}
    order = lambda name, k: (KIND_ORDER[k], ranks.get(name, math.inf),  # noqa: E731
                             next((metric_value(r, RANKED_BY) or 0 for r in recs
                                   if r["predictor"]["name"] == name), 0), name)
    rows = []
    for r in sorted(recs, key=lambda r: order(r["predictor"]["name"], kind(r["predictor"]))):
        m, p = r["metrics"], r["predictor"]
        mae = metric_value(r, RANKED_BY)
        ci = (m.get(RANKED.ci) if mae is not None else None) or [None, None]
        s = sig.get(p["name"])
        cols = [rank_cell(s, ranks.get(p["name"])), cell(mae, RANKED.digits)]
        constant = next((f for f in flagged.get(p["name"], []) if f["flag"] == "constant"), None)
        if constant:
            cols[0]["title"] = constant["title"]
        cols.append({"text": f"{ci[0]:.1f}–{ci[1]:.1f}", "v": repr(float(ci[1] - ci[0]))}
                    if None not in ci else cell(None))
        untested = ({"text": "n.t.", "v": "3", "title": "fewer test prompts than a paired "
                     "bootstrap needs: no difference can be called significant"}
                    if s and s.get("too_few_groups") else cell(None))
        cols += [verdict(s, "vs_ref") if s and s.get("tested") else untested,
                 verdict(s, "vs_best") if s and s.get("tested") else untested]
        cols += [cell(metric_value(r, k), d) for k, _h, d, _t in ACCURACY if k != RANKED_BY]
        cols.append(cell((r.get("timing") or {}).get("per_request_ms"), 2))
        notes = ", ".join(f"{k.replace('_', ' ')} {v:.0%}"
                          for k, v in sorted((r.get("diagnostics") or {}).items()))
        if kind(p) == "oracle" and mae == 0:
            notes = ", ".join(filter(None, [notes, "MAE 0 by construction: one row per group"]))
        rows.append({"name": p["name"], "family": p.get("family"), "kind": kind(p), "cols": cols,
                     "note": notes, "flags": flagged.get(p["name"], [])})
    return rows


def _mode_order(item) -> tuple:
    return (MODES.index(item[0]) if item[0] in MODES else len(MODES), item[0])


def e2e_tables(recs: list[dict]) -> list[dict]:
    """Per batching mode: FCFS and oracle baselines, and each predictor against both."""
    modes: dict[str, dict] = {}
    for r in recs:
        blocks = ((r.get("end_to_end") or {}).get("modes") or {}).items()
        for mode, block in sorted(blocks, key=_mode_order):
            if not block:
                continue
            t = modes.setdefault(mode, {"mode": mode, "fcfs": block.get("fcfs") or {},
                                        "oracles": {}, "rows": []})
            policy = block.get("policy") or "sjf"
            t["oracles"].setdefault(policy, block.get("oracle") or {})
            m = block.get("predictor") or {}
            vf, vo = block.get("vs_fcfs") or {}, block.get("vs_oracle") or {}
            cols = []
            for key, _g, _u, digits in E2E:
                cols += [cell(m.get(key), digits), cell(vf.get(key), 2, "×"),
                         cell(vo.get(key), 2, "×")]
            t["rows"].append({"name": r["predictor"]["name"], "kind": kind(r["predictor"]),
                              "family": r["predictor"].get("family"), "policy": policy,
                              "cols": cols})
    order = _table_order(metric_ranks(recs))
    for t in modes.values():
        t["rows"].sort(key=lambda row: order(row["name"], row["kind"]))
        # FCFS, then the oracle (true lengths) under each policy the predictors ran with; each
        # predictor's ÷oracle is against the oracle of its own policy.
        t["policies"] = sorted(t["oracles"])
        t["baselines"] = [
            {"name": name, "policy": policy,
             "cols": [c for key, _g, _u, d in E2E
                      for c in (cell(run.get(key), d), cell(None), cell(None))]}
            for name, policy, run in [("FCFS", "fcfs", t["fcfs"])]
            + [("oracle", p, t["oracles"][p]) for p in t["policies"]]]
    return list(modes.values())


def config_meta(recs: list[dict], block: dict | None) -> dict:
    d, ref = recs[0]["dataset"], recs[0].get("references") or {}
    return {"model": d.get("model"), "model_revision": d.get("model_revision"),
            "split": d.get("split"), "partition": d.get("partition"),
            "sources": d.get("sources") or [], "source_mix": d.get("source_mix"),
            "fingerprint": d.get("fingerprint"), "test_rows": ref.get("test_rows"),
            "mean_len": ref.get("test_mean_output_tokens"),
            "truncation": ref.get("test_truncation_rate"), "floor": ref.get("static_floor_mae"),
            "path": (block or {}).get("path") or d.get("path"),
            "repo": (block or {}).get("repo") or d.get("repo"),
            "revision": (block or {}).get("revision") or d.get("revision")}


VERDICT_CLASS = {"reproduced": "ok", "same direction, not significant": "dir",
                 "reversed, not significant": "rev", "reversed": "rev", "no difference": "dir",
                 "not tested": "nt"}


def comparison(block: dict | None) -> list[dict]:
    """The paper comparison's claims as the page shows them: figures formatted per row."""
    if not block:
        return []

    def num(v, digits):
        return "–" if v is None else f"{v:,.{digits}f}"

    def pct(v):
        return "–" if v is None else f"{100 * v:+.1f}%"

    def side(v, ci, fmt):
        return {"value": fmt(v), "ci": f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""}

    claims = []
    for claim in block.get("claims") or []:
        rows, hypotheses = [], {}
        for r in claim["rows"]:
            d = r.get("digits", 1)
            paper = r.get("paper")
            eff = r["effect"]
            rows.append({
                "scope": r["scope"], "what": r["what"],
                "paper": [num(v, max(d, 2)) for v in paper] if paper else ["–"],
                "paper_effect": pct(r.get("paper_effect")),
                "ours": [side(s_.get("value"), s_.get("ci95"), lambda v: num(v, d))
                         for s_ in r["ours"]],
                "effect": side(eff.get("value"), eff.get("ci95"), pct),
                "p_holm": ("–" if r.get("p_holm") is None else "<0.001" if r["p_holm"] < 0.001
                           else f"{r['p_holm']:.3f}"),
                "verdict": r["verdict"], "cls": VERDICT_CLASS.get(r["verdict"], "nt"),
                "note": r.get("note"), "records": r.get("records") or []})
            # one hypothesis per config, not per row: the longest of its rows' (a row that is
            # not significant adds the test size to the same facts)
            h = r.get("hypothesis")
            if h and len(h) > len(hypotheses.get(r["scope"], "")):
                hypotheses[r["scope"]] = h
        shared: dict[str, list[str]] = {}  # configs whose hypotheses read the same, together
        for scope, text in hypotheses.items():
            shared.setdefault(text, []).append(scope)
        claims.append({"id": claim["id"], "title": claim["title"],
                       "paper_text": claim.get("paper_text"), "rows": rows,
                       "hypotheses": [{"scopes": scopes, "text": text}
                                      for text, scopes in shared.items()]})
    return claims


def by_generator(block: dict | None) -> dict | None:
    """The claims' headline rows with the generators side by side (`paper.side_by_side`), as the
    page shows them; None with fewer than two generators (the claims' own tables say it all)."""
    table = side_by_side(block)
    if len(table["generators"]) < 2:
        return None

    def pct(v):
        return "–" if v is None else f"{100 * v:+.1f}%"

    rows = []
    for r in table["rows"]:
        cells = []
        for gen in table["generators"]:
            c = r["cells"].get(gen)
            cells.append(None if c is None else {
                "effect": pct(c["effect"]),
                "ci": f"[{pct(c['ci95'][0])}, {pct(c['ci95'][1])}]" if c["ci95"] else "",
                "p_holm": ("–" if c["p_holm"] is None else "<0.001" if c["p_holm"] < 0.001
                           else f"{c['p_holm']:.3f}"),
                "verdict": c["verdict"], "cls": VERDICT_CLASS.get(c["verdict"], "nt"),
                "scope": c["scope"]})
        rows.append({"claim": r["claim"], "label": r["label"],
                     "paper_effect": pct(r["paper_effect"]), "cells": cells})
    return {"generators": table["generators"], "rows": rows}


def page_context(records: list[dict], manifest: dict) -> dict:
    cards = cards_for(records)
    records = [keyed(r) for r in records]
    groups = by_config(records)
    progressive = sorted({r["predictor"]["name"] for r in records if r.get("per_step")})
    palette = plots.colors(progressive)
    configs = []
    for name, recs in groups.items():
        block = (manifest.get("configs") or {}).get(name)
        curves = {r["predictor"]["name"]: [(t, v.get(PAPER_METRIC)) for t, v in r["per_step"].items()]
                  for r in recs if r.get("per_step")}
        sig = significance(recs)
        configs.append({"name": name, "meta": config_meta(recs, block),
                        "rows": config_table(recs, sig), "summary": summary(recs, sig),
                        "e2e": e2e_tables(recs), "steps": plots.line_plot(curves, palette),
                        "hist": plots.histogram((block or {}).get("length_histogram")),
                        "hist_stats": (block or {}).get("length_histogram")})
    return {"manifest": manifest, "configs": configs, "config_names": list(groups),
            "overview": overview(groups), "mean_tau": mean_tau(groups),
            "accuracy": ACCURACY, "ranked": RANKED, "e2e_cols": E2E,
            "significance": SIGNIFICANCE, "stability_seeds": STABILITY_SEEDS,
            "constant_spread": CONSTANT_SPREAD,
            "fallback_rate": FALLBACK_RATE,
            "comparison": comparison(manifest.get("paper_comparison")),
            "comparison_test": (manifest.get("paper_comparison") or {}).get("test"),
            "by_generator": by_generator(manifest.get("paper_comparison")),
            "min_groups": MIN_GROUPS,
            "notes": markdown(manifest["notes"]) if manifest.get("notes") else None,
            "cards": cards, "has_e2e": any(c["e2e"] for c in configs),
            "has_steps": any(c["steps"] for c in configs),
            "manifest_text": json.dumps(manifest, indent=2, sort_keys=True),
            "manifest_script": script_json(manifest)}


def script_json(value) -> str:
    """JSON safe inside <script type="application/json">: no `</script>`, no `<!--`."""
    from markupsafe import Markup

    text = json.dumps(value, sort_keys=True)
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def render_page(records: list[dict], manifest: dict) -> str:
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    source = importlib.resources.files("forelen.leaderboard").joinpath(
        "templates/index.html.j2").read_text()
    return env.from_string(source).render(**page_context(records, manifest))


# -- predictor cards -------------------------------------------------------------------------

def read_card(name: str, shipped: str | None = None) -> dict | None:
    """src/forelen/cards/predictors/<name>.md, or the card a plugin ships (its class's `card` text, kept in
    its records): `key: value` front matter between `---` lines, then a Markdown body. A plugin's
    card is rendered like ours: Markdown without raw HTML, links only to http(s)."""
    path = importlib.resources.files("forelen.cards").joinpath(f"predictors/{name}.md")
    if path.is_file():
        text = path.read_text()
    elif shipped:
        text = shipped
    else:
        return None
    meta: dict[str, str] = {}
    if text.startswith("---\n"):
        head, _, text = text[4:].partition("\n---\n")
        for line in head.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip():
                meta[key.strip()] = _unquote(value.strip())
    return {"meta": meta, "body": text.strip()}


def _unquote(value: str) -> str:
    """A YAML double-quoted scalar (used where a value holds `: `) back to its text."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def markdown(text: str) -> str:
    """Card Markdown to HTML with raw HTML disabled (so a card cannot inject markup)."""
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))


def cards_for(records: list[dict]) -> list[dict]:
    """One card per predictor on the page: the card file's text, the records' version and params."""
    out = []
    for name in sorted({r["predictor"]["name"] for r in records}):
        recs = [r for r in records if r["predictor"]["name"] == name]
        p = recs[0]["predictor"]
        card = read_card(name, p.get("card")) or {"meta": {}, "body": ""}
        params: dict[str, list] = {}
        for r in recs:
            for k, v in sorted((r["predictor"].get("params") or {}).items()):
                text = json.dumps(v, sort_keys=True)
                if text not in params.setdefault(k, []):
                    params[k].append(text)
        inputs = sorted({c for r in recs for c in r["predictor"].get("columns") or []})
        out.append({"name": name, "title": card["meta"].get("title", name),
                    "family": p.get("family"), "kind": kind(p),
                    "versions": sorted({str(r["predictor"].get("version")) for r in recs}),
                    "reference": card["meta"].get("reference") or p.get("reference"),
                    "url": _safe_url(card["meta"].get("url")),
                    "body": markdown(card["body"]) if card["body"] else "",
                    "inputs": inputs, "params": [(k, " | ".join(v)) for k, v in params.items()]})
    return out


def _safe_url(url: str | None) -> str | None:
    return url if url and url.startswith(("https://", "http://")) else None


# -- command ---------------------------------------------------------------------------------

def render_command(source: str | None, results: str | None, out: str | None) -> Path:
    """Render a release folder or a results folder (a preview, nothing frozen); return the page."""
    if source and results:
        raise ForelenError("give either a folder or --results, not both")
    folder = Path(source or results or "results")
    if (folder / MANIFEST).is_file() and (folder / RECORDS).is_dir():
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except ValueError:
            raise ForelenError(f"{folder / MANIFEST} is not valid JSON") from None
        records = [r.body for r in load_records(folder / RECORDS)]
        default = Path(f"leaderboard-{manifest.get('release') or 'preview'}.html")
    else:
        loaded = load_records(folder)
        manifest = build_manifest(loaded, None)
        records = [r.body for r in loaded]
        default = folder / "index.html"
    path = Path(out) if out else default
    if (folder / MANIFEST).is_file() and (folder / RECORDS).is_dir() \
            and path.resolve().is_relative_to(folder.resolve()):
        raise ForelenError(f"{folder} is a frozen release; render its preview elsewhere (--out)")
    atomic_write_bytes(path, render_page(records, manifest).encode())
    return path
