"""`forelen evaluate` front end: resolve names, run the protocol, print the results table."""

from __future__ import annotations

from pathlib import Path

from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError
from forelen.leaderboard.evaluate import (_unknown, fit_and_save, run_evaluation,
                                          run_saved_evaluation)
from forelen.leaderboard.ranking import flags, keyed, summary
from forelen.metrics import METRICS, ORDER_METRIC, PAPER_METRIC, RANKED, RANKED_BY, metric_value
from forelen.predictors import PREDICTORS, load_predictor
from forelen.predictors._plugins import entry_points, is_spec, parse_args
from forelen.predictors._saved import read_fitted


def predictor_names(predictor: str, families: tuple[str, ...] = ()) -> list[str]:
    """`all` (registered and entry-point predictors, optionally narrowed to some families), one
    registered name, an entry point, or a plugin spec (`path/file.py:Class`, `module:Class`)."""
    if predictor != "all":
        cls, _ = load_predictor(predictor)
        return [predictor if is_spec(predictor) else cls.info.name]
    known = sorted({cls.info.family for _, cls in PREDICTORS.items()})
    bad = [f for f in families if f not in known]
    if bad:
        raise ForelenError(f"unknown predictor family {bad[0]!r}; known: {', '.join(known)}")
    names = [n for n, cls in PREDICTORS.items() if not families or cls.info.family in families]
    for name in sorted(entry_points()):
        if name not in names and (not families or load_predictor(name)[0].info.family
                                  in families):
            names.append(name)
    return names


def resolve_names(predictor: str | list[str], data: str, config: str,
                  families: tuple[str, ...] = ()):
    """`predictor`: one `--predictor` value, or several (repeated options), evaluated together."""
    specs = [predictor] if isinstance(predictor, str) else list(predictor)
    names = list(dict.fromkeys(n for spec in specs for n in predictor_names(spec, families)))
    folder = DatasetFolder(data)
    if not folder.exists("manifest.json"):
        raise ForelenError(f"no dataset folder at {data} (no manifest.json); build one with "
                           "`forelen build` or pass --data")
    built = sorted(n for n, e in folder.manifest()["configs"].items() if e.get("status") == "complete")
    if config == "all":
        if not built:
            raise ForelenError(f"{data} holds no complete config yet")
        return folder, built, names
    if config not in built:
        raise ForelenError(_unknown("config", config, built))
    return folder, [config], names


NULL = "–"  # a metric the predictor does not produce, as on the page


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return NULL
    return f"{value:.{digits}f}"


def print_json(records: list[dict], end_to_end: bool = False) -> None:
    """One JSON list on stdout: per (config, predictor) its metrics, per-step MAE and record path
    (the per-row errors stay in the record files)."""
    import json

    keys = ["metrics", "per_step", "diagnostics", "timing"] + (["end_to_end"] if end_to_end
                                                                 else [])
    print(json.dumps([{"config": r["dataset"]["config"], "predictor": r["predictor"]["name"],
                       "key": r["predictor"].get("key"),
                       "version": r["predictor"]["version"], "path": r.get("path"),
                       **{k: r.get(k) for k in keys}} for r in records], indent=2, default=str))


def evaluate_command(predictor: str | list[str], data: str, config: str, seed: int, results: str,
                     console, families: tuple[str, ...] = (),
                     predictor_args: str | None = None) -> list[dict]:
    folder, configs, names = resolve_names(predictor, data, config, families)
    rows = []
    show = _show_line(console, rows)
    console.print(f"evaluating {len(names)} predictor(s) on {len(configs)} config(s), seed {seed}")

    run_evaluation(folder, configs, names, seed, results, on_result=show, say=console.print,
                   predictor_args=parse_args(predictor_args))
    show_tables(rows, configs, results, console)
    return rows


def _show_line(console, rows: list):
    def show(record):
        console.print(f"  {record['dataset']['config']:>24}  "
                      f"{record['predictor'].get('key', record['predictor']['name']):<20} "
                      f"{RANKED.text} {_fmt(metric_value(record, RANKED_BY), RANKED.digits)}")
        rows.append(record)

    return show


def fit_command(predictor: str, data: str, config: str, seed: int, out: str, overwrite: bool,
                console, predictor_args: str | None = None) -> dict:
    """`forelen fit`: one predictor on one config, saved to `out`; prints what was saved."""
    if predictor == "all" or "," in predictor:
        raise ForelenError(f"--predictor {predictor!r}: fit saves one predictor; give one name")
    if config == "all":
        raise ForelenError("--config all: fit saves a predictor of one config; name it")
    folder, configs, _ = resolve_names(predictor, data, config)
    meta = fit_and_save(folder, configs[0], predictor, seed, out, overwrite,
                        parse_args(predictor_args), say=console.print)
    fit, p = meta["fit"], meta["predictor"]
    val = fit.get("validation")
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    console.print(f"  fitted {p['key']} in {fit['fit_s']:.1f} s"
                  + (f", validation MAE {val[PAPER_METRIC]:.1f} ({val['n']} rows)" if val else ""))
    console.print(f"[green]saved[/green] {p['name']} (version {p['version']}) to {out}: "
                  f"{meta['tensors']['count']} tensors, {size / 1e6:.2f} MB; reads "
                  f"{', '.join(meta['fitted_on']['columns'])} of "
                  f"{meta['fitted_on']['generator']['model_slug'] or 'an unknown generator'}; "
                  f"score it with `forelen evaluate --from {out}`")
    return meta


def evaluate_saved_command(saved: str, data: str | None, config: str | None,
                           seed: int | None, results: str, console) -> list[dict]:
    """`forelen evaluate --from DIR`: a saved predictor scored without fitting, by default on
    the dataset and config it was fitted on."""
    meta = read_fitted(Path(saved))
    fitted = meta["fitted_on"]["dataset"]
    if data is None:
        where = fitted["path"]
        data = where if "://" in where else str(Path(saved) / where)
        if "://" not in where and not (Path(data) / "manifest.json").is_file():
            raise ForelenError(f"{saved} was fitted on {fitted['config']} of a dataset at "
                               f"{where} (relative to it), which is not there; pass --data")
    folder, configs, _ = resolve_names([], data, config or fitted["config"])
    rows = []
    run_saved_evaluation(folder, configs, saved, results, seed, on_result=_show_line(console, rows),
                         say=console.print)
    show_tables(rows, sorted({r["dataset"]["config"] for r in rows}), results, console)
    return rows


def show_tables(rows: list[dict], configs: list[str], results: str, console) -> None:
    """Per config: the results table, the summary line, the rl floor, per-step MAE."""
    for cfg in configs:
        recs = [r for r in rows if r["dataset"]["config"] == cfg]
        table = results_table(recs, f"{cfg} (test rows: {recs[0]['references']['test_rows']})",
                              console.width)
        console.print(table)
        console.print(f"  {summary([keyed(r) for r in recs])}")
        floor = recs[0]["references"].get("static_floor_mae")
        if floor is not None:
            console.print(f"  rl static floor (each sample by its own group's median): MAE {floor:.1f}")
        for r in recs:
            if r.get("per_step"):
                steps = "  ".join(f"t={t}: {v[PAPER_METRIC]:.1f}" for t, v in r["per_step"].items())
                console.print(f"  {r['predictor']['name']} remaining-length MAE by observed step: {steps}")
    console.print(f"result records: {Path(results) / '<config>' / '<predictor>.json'}")


# Below this width even the predictor, MAE and its interval do not fit side by side: each
# predictor's figures are listed one per line instead.
VERTICAL_BELOW = 48
NAME_MIN = 12  # a predictor name wraps onto more lines, down to this width; values never wrap


def results_table(recs: list[dict], title: str, width: int = 80):
    """One config's records as the terminal shows them, within `width` columns: the predictor,
    then a column per metric of METRICS (and its interval; MAE and tau first) and ms/req, as
    many as fit whole, in that order; a footnote names the columns left out (all are in `--json`). A value is
    never cut: columns are left out instead, names wrap, and below VERTICAL_BELOW the figures
    go one per line. "–" where a predictor does not produce a metric; sorted by MAE, none last.
    A flagged predictor (`ranking.flags`: constant, fallback) says so after its name."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    recs = sorted(recs, key=lambda r: (not r["predictor"]["ranked"],
                                       metric_value(r, RANKED_BY) is None,
                                       metric_value(r, RANKED_BY) or 0.0))
    flagged = flags([keyed(r) for r in recs])
    names, columns = [], []  # columns: (header, [cell per record])
    for r in recs:
        p = r["predictor"]
        marks = ([] if p["ranked"] else ["oracle ref."]) + [
            f["text"] for f in flagged.get(p.get("key") or p["name"], [])]
        names.append(p.get("key", p["name"]) + (f" ({', '.join(marks)})" if marks else ""))
    # the ranked metric and Kendall tau (the order a scheduler uses) first, then METRICS' order
    first = (RANKED_BY, ORDER_METRIC)
    for metric in sorted(METRICS, key=lambda m: first.index(m.key) if m.key in first else 2):
        columns.append((metric.text, [_fmt(metric_value(r, metric.key), metric.digits)
                                      for r in recs]))
        if metric.ci:
            cells = []
            for r in recs:
                ci = r["metrics"].get(metric.ci) if metric_value(r, metric.key) is not None \
                    else None
                cells.append(f"{ci[0]:.0f}-{ci[1]:.0f}" if ci else NULL)
            columns.append(("95% CI", cells))
    columns.append(("ms/req", [_fmt(r["timing"]["per_request_ms"], 2) for r in recs]))

    def span(header, cells):  # a column's width with its padding and rule (rich's default box)
        return max([len(header)] + [len(c) for c in cells]) + 3

    name_w = max([len("predictor")] + [len(n) for n in names])
    if width < VERTICAL_BELOW:
        lines = [Text(title, style="italic")]
        for i, name in enumerate(names):
            lines.append(Text(name, style="bold"))
            lines += [Text(f"  {h}: {cells[i]}") for h, cells in columns]
        return Group(*lines)
    name_cap = min(name_w, max(NAME_MIN, width // 3))
    used = 1 + name_cap + 3
    shown = []
    for header, cells in columns:
        if used + span(header, cells) > width:
            break
        shown.append((header, cells))
        used += span(header, cells)
    table = Table(title=title)
    # the names take what the figures leave, and wrap within it
    table.add_column("predictor", justify="left", overflow="fold",
                     max_width=min(name_w, name_cap + width - used))
    for header, cells in shown:
        table.add_column(header, justify="right", no_wrap=True,
                         min_width=max([len(header)] + [len(c) for c in cells]))
    for i, name in enumerate(names):
        table.add_row(name, *[cells[i] for _, cells in shown])
    left = [h for h, _ in columns[len(shown):]]
    if not left:
        return table
    return Group(table, Text(f"  not shown at {width} columns: {', '.join(left)} "
                             "(a wider terminal, COLUMNS=200, or --json shows all)"))
