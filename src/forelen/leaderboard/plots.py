"""Geometry of the page's inline SVG plots: numbers in, coordinates and tick labels out.

The template draws; this module only computes, with fixed decimals so the page is byte-identical
from one render to the next.
"""

from __future__ import annotations

import math

# Okabe-Ito and Tableau hues: distinguishable, and readable for most colour-vision deficiencies.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7f3c8d",
           "#4e79a7", "#b07aa1", "#9c755f")
WIDTH, HEIGHT = 460, 250
MARGIN = dict(left=48, right=14, top=14, bottom=38)


def colors(names) -> dict[str, str]:
    """One colour per name, stable across plots of the page."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(set(names)))}


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top` (1-2-5 steps)."""
    if not top or top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.2g}"


def _frame(width: int, height: int) -> dict:
    m = MARGIN
    return {"w": width, "h": height, "x0": m["left"], "x1": width - m["right"],
            "y0": height - m["bottom"], "y1": m["top"]}


def _f(v: float) -> str:
    return f"{v:.1f}"


def line_plot(series: dict[str, list[tuple[int, float]]], palette: dict[str, str],
              width: int = WIDTH, height: int = HEIGHT) -> dict | None:
    """MAE against observed step: x is categorical over the steps present (0, 1, 2, 4, ...)."""
    series = {k: [(int(t), float(v)) for t, v in pts if v is not None and math.isfinite(v)]
              for k, pts in series.items()}
    series = {k: sorted(v) for k, v in series.items() if v}
    if not series:
        return None
    g = _frame(width, height)
    steps = sorted({t for pts in series.values() for t, _ in pts})
    span = g["x1"] - g["x0"] - 20
    xs = {t: g["x0"] + 10 + (span * i / max(len(steps) - 1, 1)) for i, t in enumerate(steps)}
    yt = nice_ticks(max(v for pts in series.values() for _, v in pts) * 1.05)
    ymax = yt[-1] or 1.0

    def y(v: float) -> float:
        return g["y0"] - (g["y0"] - g["y1"]) * v / ymax

    out = []
    for name, pts in sorted(series.items()):
        coords = [(_f(xs[t]), _f(y(v)), f"{name}, t={t}: MAE {v:.1f}") for t, v in pts]
        out.append({"name": name, "color": palette.get(name, PALETTE[0]),
                    "points": " ".join(f"{a},{b}" for a, b, _ in coords), "dots": coords})
    return dict(g, kind="line", series=out,
                xticks=[(_f(xs[t]), str(t)) for t in steps],
                yticks=[(_f(y(v)), _label(v)) for v in yt],
                xlabel="observed decode step t", ylabel="MAE of remaining length")


def histogram(hist: dict | None, width: int = WIDTH, height: int = HEIGHT) -> dict | None:
    """Bars of a length histogram ({"edges", "counts", "max_new_tokens", ...} from the manifest)."""
    if not hist or not hist.get("counts"):
        return None
    g = _frame(width, height)
    edges, counts = hist["edges"], hist["counts"]
    lo, hi = edges[0], edges[-1] or 1.0
    yt = nice_ticks(max(counts) or 1)
    ymax = yt[-1] or 1.0
    sx = (g["x1"] - g["x0"]) / (hi - lo)
    bars = []
    for a, b, c in zip(edges, edges[1:], counts):
        top = g["y0"] - (g["y0"] - g["y1"]) * c / ymax
        bars.append({"x": _f(g["x0"] + (a - lo) * sx + 0.5), "w": _f(max((b - a) * sx - 1, 0.5)),
                     "y": _f(top), "h": _f(g["y0"] - top),
                     "title": f"{a:g}-{b:g} tokens: {c} samples"})
    xt = nice_ticks(hi, 6)
    cap = hist.get("max_new_tokens")
    return dict(g, kind="hist", bars=bars,
                xticks=[(_f(g["x0"] + (v - lo) * sx), _label(v)) for v in xt if v <= hi],
                yticks=[(_f(g["y0"] - (g["y0"] - g["y1"]) * v / ymax), _label(v)) for v in yt],
                cap_x=_f(g["x0"] + (cap - lo) * sx) if cap and lo <= cap <= hi else None,
                xlabel="output tokens", ylabel="samples")
