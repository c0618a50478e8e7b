"""Pictures: a cell's block graph and the progress of a search, as PNG files.

Figures are drawn with matplotlib's object API on the Agg canvas
(`Figure` + `FigureCanvasAgg`), never through `pyplot`, so nothing here
selects a backend or leaves figures open in a user's pyplot session. Files
are written to a temporary file beside the target and renamed into place.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from metasearch.api import CellGraph

# Layout sizes in inches at full scale (the picture shrinks past the caps).
_NODE_HEIGHT = 0.42
_ROW_GAP = 0.95
_GRID_ROW_GAP = 1.25
_MARGIN = 0.45
_TITLE_SPACE = 0.55
_MAX_WIDTH = 30.0
_MAX_HEIGHT = 24.0
_DPI = 130
_NODE_FONT = 9.0
_LABEL_FONT = 7.5
_LABEL_MAX_CHARS = 14
_DATA_FLOW = frozenset({"concat", "sum"})
_FLOW_COLOR = "#9a9a9a"
_PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
_NODE_COLORS = {"input": "#cfe3f7", "node": "#fbf1d3", "output": "#d4f0d0"}
# Long operation-name pieces and their short forms, applied in order.
_ABBREVIATIONS = (
    ("separable conv", "sep"),
    ("sep conv", "sep"),
    ("dilated conv", "dil"),
    ("dil conv", "dil"),
    ("nor conv", "conv"),
    ("average pool", "avg"),
    ("avg pool", "avg"),
    ("max pool", "max"),
    ("skip connect", "skip"),
    ("identity", "id"),
    ("stride2", "/2"),
    ("upsample2", "up2"),
)


def draw_cell(graph: CellGraph, path: str, title: str | None = None) -> str:
    """Draws `graph` as a PNG at `path` (written atomically); returns `path`.

    Input states sit on the left, intermediate nodes in topological columns
    (a node's column is one more than its sources' largest), the output on
    the right; a graph with a `grid` (a neural fabric's layers x scales)
    places its states on that grid instead. Each edge is an
    arrow labelled with its (abbreviated) operation; `concat`/`sum` edges are
    thin, grey and unlabelled, and the output names how it merges them.
    Raises `ValueError` for an edge between undeclared states, duplicate
    names or a cycle.
    """
    _validate(graph)
    positions = _grid_layout(graph) or _column_layout(graph)
    sizes = {name: _node_size(name) for name in positions}
    edges = _route_edges(graph, positions, sizes)

    # Frame everything: nodes, the sampled arcs and the label boxes.
    boxes = [_box(positions[n], sizes[n]) for n in positions]
    boxes += [e["label_box"] for e in edges if e["label_box"] is not None]
    xs = [v for b in boxes for v in (b[0], b[2])] + [p[0] for e in edges for p in e["points"]]
    ys = [v for b in boxes for v in (b[1], b[3])] + [p[1] for e in edges for p in e["points"]]
    x0, x1 = min(xs) - _MARGIN, max(xs) + _MARGIN
    y0, y1 = min(ys) - _MARGIN, max(ys) + _MARGIN
    if title:
        y1 += _TITLE_SPACE
    width, height = x1 - x0, y1 - y0
    # One data unit is `scale` inches both ways, so the arcs and label boxes
    # computed in data units match what matplotlib draws.
    scale = min(1.0, _MAX_WIDTH / width, _MAX_HEIGHT / height)
    figure = Figure(figsize=(width * scale, height * scale), dpi=_DPI * min(1.5, 1 / scale))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(x0, x1)
    axes.set_ylim(y0, y1)
    axes.set_axis_off()
    if title:
        axes.text(
            (x0 + x1) / 2,
            y1 - _TITLE_SPACE / 2,
            title,
            ha="center",
            va="center",
            fontsize=11 * max(scale, 0.4),
            fontweight="bold",
        )

    patches = {}
    kinds = {n: "input" for n in graph.inputs} | {n: "node" for n in graph.nodes}
    kinds[graph.output] = "output"
    merge = _output_merge(graph)
    for name, (x, y) in positions.items():
        w, h = sizes[name]
        patch = FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.1",
            facecolor=_NODE_COLORS[kinds[name]],
            edgecolor="#444444",
            linewidth=1.0 * scale,
            zorder=3,
        )
        axes.add_patch(patch)
        patches[name] = patch
        text = name if name != graph.output or not merge else f"{name}\n({merge})"
        axes.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=_NODE_FONT * scale * (0.85 if "\n" in text else 1.0),
            zorder=4,
        )

    for edge in edges:
        flow = edge["label_box"] is None
        axes.add_patch(
            FancyArrowPatch(
                positions[edge["source"]],
                positions[edge["target"]],
                connectionstyle=f"arc3,rad={edge['rad']}",
                arrowstyle="-|>",
                mutation_scale=(8 if flow else 11) * scale,
                linewidth=(0.7 if flow else 1.4) * scale,
                color=edge["color"],
                patchA=patches[edge["source"]],
                patchB=patches[edge["target"]],
                shrinkA=1,
                shrinkB=1,
                zorder=1 if flow else 2,
            )
        )
        if flow:
            continue
        bx0, by0, bx1, by1 = edge["label_box"]
        axes.text(
            (bx0 + bx1) / 2,
            (by0 + by1) / 2,
            edge["label"],
            ha="center",
            va="center",
            fontsize=_LABEL_FONT * scale,
            color=edge["color"],
            zorder=5,
            bbox={
                "boxstyle": "round,pad=0.2",
                "facecolor": "white",
                "edgecolor": edge["color"],
                "linewidth": 0.6 * scale,
                "alpha": 0.92,
            },
        )
    return _save(figure, path)


def _route_edges(graph: CellGraph, positions, sizes) -> list[dict[str, Any]]:
    """Curvature, colour and label box of every edge, avoiding nodes and other labels.

    An edge bends (matplotlib's `arc3`) when its straight line would cross
    another node, and parallel edges between the same two states fan out.
    Labels go at the free spot nearest the middle of their edge. Labelled
    edges are routed first so their labels get the best spots.
    """
    names = list(positions)
    node_boxes = np.array([_box(positions[n], sizes[n], pad=0.06) for n in names])
    totals: dict[tuple[str, str], int] = {}
    for source, target, _ in graph.edges:
        totals[(source, target)] = totals.get((source, target), 0) + 1
    seen: dict[tuple[str, str], int] = {}
    colors: dict[str, str] = {}
    taken = [tuple(b) for b in node_boxes]
    routed = []
    order = sorted(range(len(graph.edges)), key=lambda i: graph.edges[i][2] in _DATA_FLOW)
    for index in order:
        source, target, operation = graph.edges[index]
        key = (source, target)
        k = seen.get(key, 0)
        seen[key] = k + 1
        others = node_boxes[[n not in key for n in names]]
        start, end = positions[source], positions[target]
        drawn = np.array([p for e in routed for p in e["points"]]).reshape(-1, 2)
        rad = _choose_rad(start, end, (k - (totals[key] - 1) / 2) * 0.3, others, drawn)
        flow = operation in _DATA_FLOW
        label = _short_label(operation)
        label_box = None
        if not flow:
            w, h = _label_size(label)
            label_box = _label_box(start, end, rad, w, h, taken)
            taken.append(label_box)
        routed.append(
            {
                "source": source,
                "target": target,
                "rad": rad,
                "label": label,
                "label_box": label_box,
                "color": _FLOW_COLOR
                if flow
                else colors.setdefault(label, _PALETTE[len(colors) % len(_PALETTE)]),
                "points": _arc_points(start, end, rad, 16).tolist(),
            }
        )
    return routed


def plot_search_progress(trials: list[dict[str, Any]], path: str, title: str = "") -> str:
    """Plots validation accuracy per trial and the best so far as a PNG; returns `path`.

    `trials` are trial records in trial order (sorted by `trial_id` when every
    id is a number), e.g. `{"trial_id": "03", "status": "COMPLETED",
    "val_accuracy": 0.81, "val_ci95": 0.02}`; accuracies are fractions and are
    shown in percent, with the 95% interval as an error bar when present.
    Trials without a score are marked along the bottom: failed or invalid
    ones with a red cross, others (running, stopped) with a grey ring.
    Written atomically.
    """
    records = _trial_order(trials)
    if any(r.get("val_mse") is not None for r in records):
        return _plot_regression_progress(records, path, title)
    n = len(records)
    figure, axes = _progress_figure(n, title, "validation accuracy (%)")

    scored = [(i + 1, r) for i, r in enumerate(records) if _score(r) is not None]
    failed = [
        i + 1
        for i, r in enumerate(records)
        if _score(r) is None and str(r.get("status", "")).upper() in ("FAILED", "INVALID")
    ]
    unscored = [
        i + 1 for i, r in enumerate(records) if _score(r) is None and i + 1 not in set(failed)
    ]
    marker = 5 if n <= 100 else 3 if n <= 400 else 2

    if scored:
        xs = [x for x, _ in scored]
        ys = [100 * _score(r) for _, r in scored]
        errors = [100 * _ci(r) for _, r in scored]
        has_ci = any(e > 0 for e in errors)
        axes.errorbar(
            xs,
            ys,
            yerr=errors if has_ci else None,
            fmt="o",
            markersize=marker,
            color="#1f77b4",
            ecolor="#8fb8de",
            elinewidth=0.8 if n <= 200 else 0.4,
            capsize=2 if n <= 100 else 0,
            label="trial (95% CI)" if has_ci else "trial",
            zorder=3,
        )
        best_x, best_y, best = [], [], -math.inf
        best_trial = None
        scores = dict(zip(xs, ys))
        for x in range(xs[0], n + 1):
            if x in scores and scores[x] > best:
                best = scores[x]
                best_trial = records[x - 1].get("trial_id", x)
            best_x.append(x)
            best_y.append(best)
        axes.step(best_x, best_y, where="post", color="#d62728", linewidth=1.6, label="best so far")
        axes.plot(
            [best_x[best_y.index(best)]],
            [best],
            "*",
            color="#d62728",
            markersize=marker + 7,
            label=f"best: {best:.1f}% (trial {best_trial})",
            zorder=4,
        )
        low = min(y - e for y, e in zip(ys, errors))
        high = max(y + e for y, e in zip(ys, errors))
        span = max(high - low, 10.0)
        # Room below the lowest score for the row of unscored-trial markers.
        axes.set_ylim(max(low - 0.18 * span, -5.0), min(high + 0.08 * span, 105.0))
    else:
        axes.set_ylim(0, 100)
    bottom = blended_transform_factory(axes.transData, axes.transAxes)
    if failed:
        axes.plot(
            failed,
            [0.04] * len(failed),
            "x",
            transform=bottom,
            color="#d62728",
            markersize=marker + 2,
            markeredgewidth=1.5 if n <= 200 else 1.0,
            label=f"failed ({len(failed)})",
            clip_on=False,
            zorder=5,
        )
    if unscored:
        axes.plot(
            unscored,
            [0.04] * len(unscored),
            "o",
            transform=bottom,
            markerfacecolor="none",
            markeredgecolor="#7f7f7f",
            markersize=marker + 1,
            label=f"no score ({len(unscored)})",
            clip_on=False,
            zorder=5,
        )
    if n == 0:
        axes.text(
            0.5,
            0.5,
            "no trials yet",
            transform=axes.transAxes,
            ha="center",
            va="center",
            color="#7f7f7f",
            fontsize=12,
        )
        axes.set_xlim(0.5, 1.5)
    else:
        pad = max(0.5, n * 0.01)
        axes.set_xlim(1 - pad, n + pad)
    if scored or failed or unscored:
        # Outside the axes: inside, it would hide the newest trials.
        figure.legend(loc="outside right upper", fontsize=8)
    return _save(figure, path)


def _validate(graph: CellGraph) -> None:
    """Raises ValueError unless `graph` is a DAG over its declared states."""
    names = [*graph.inputs, *graph.nodes, graph.output]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"cell {graph.name!r}: states declared twice: {', '.join(duplicates)}")
    if not graph.inputs:
        raise ValueError(f"cell {graph.name!r}: no input states")
    sources = set(graph.inputs) | set(graph.nodes)
    targets = set(graph.nodes) | {graph.output}
    for edge in graph.edges:
        if len(edge) != 3:
            raise ValueError(f"cell {graph.name!r}: edge {edge!r} is not (source, target, op)")
        source, target, _ = edge
        if source not in sources:
            raise ValueError(
                f"cell {graph.name!r}: edge {edge!r}: source {source!r} is not a declared "
                "input or node"
            )
        if target not in targets:
            raise ValueError(
                f"cell {graph.name!r}: edge {edge!r}: target {target!r} is not a declared "
                "node or the output"
            )
    _columns(graph)  # raises on a cycle


def _columns(graph: CellGraph) -> dict[str, int]:
    """Topological column of every state: inputs 0, a node 1 + its sources' max, output last."""
    incoming: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for source, target, _ in graph.edges:
        if target in incoming:
            incoming[target].append(source)
    columns = {n: 0 for n in graph.inputs}
    remaining = list(graph.nodes)
    while remaining:
        ready = [n for n in remaining if all(s in columns for s in incoming[n])]
        if not ready:
            raise ValueError(
                f"cell {graph.name!r}: the edges form a cycle through {', '.join(remaining)}"
            )
        for n in ready:
            columns[n] = 1 + max((columns[s] for s in incoming[n]), default=0)
        remaining = [n for n in remaining if n not in columns]
    columns[graph.output] = 1 + max(columns.values())
    return columns


def _column_layout(graph: CellGraph) -> dict[str, tuple[float, float]]:
    """Positions by topological column; rows ordered by their sources' mean row."""
    columns = _columns(graph)
    sources: dict[str, list[str]] = {}
    for source, target, _ in graph.edges:
        sources.setdefault(target, []).append(source)
    declared = {n: i for i, n in enumerate([*graph.inputs, *graph.nodes, graph.output])}
    by_column: dict[int, list[str]] = {}
    for name in declared:
        by_column.setdefault(columns[name], []).append(name)
    gap = _column_gap(graph)
    positions: dict[str, tuple[float, float]] = {}
    for column in sorted(by_column):
        members = by_column[column]
        if column > 0:
            # Barycentre ordering: fewer crossings than declaration order.
            def weight(name: str) -> float:
                ys = [positions[s][1] for s in sources.get(name, []) if s in positions]
                return -sum(ys) / len(ys) if ys else 0.0

            members = sorted(members, key=lambda m: (weight(m), declared[m]))
        for row, name in enumerate(members):
            positions[name] = (column * gap, ((len(members) - 1) / 2 - row) * _ROW_GAP)
    return positions


def _grid_layout(graph: CellGraph) -> dict[str, tuple[float, float]] | None:
    """Positions from `graph.grid` (column, row of each state), or None without one."""
    if not graph.grid:
        return None
    gap = _column_gap(graph)
    positions: dict[str, tuple[float, float]] = {}
    cells: list[tuple[int, int]] = []
    loose_inputs, loose_output = [], None
    for name in [*graph.inputs, *graph.nodes, graph.output]:
        if name not in graph.grid:
            if name == graph.output:
                loose_output = name
            else:
                loose_inputs.append(name)
            continue
        layer, scale = graph.grid[name]
        cells.append((layer, scale))
        positions[name] = (layer * gap, -scale * _GRID_ROW_GAP)
    layers = [layer for layer, _ in cells]
    middle = -(max(s for _, s in cells) + min(s for _, s in cells)) / 2 * _GRID_ROW_GAP
    for row, name in enumerate(loose_inputs):
        y = middle + ((len(loose_inputs) - 1) / 2 - row) * _GRID_ROW_GAP
        positions[name] = ((min(layers) - 1) * gap, y)
    if loose_output is not None:
        positions[loose_output] = ((max(layers) + 1) * gap, middle)
    return positions


def _column_gap(graph: CellGraph) -> float:
    """Horizontal distance between columns: room for a node and a label."""
    widest_node = max(_node_size(n)[0] for n in [*graph.inputs, *graph.nodes, graph.output])
    labels = [_short_label(op) for _, _, op in graph.edges if op not in _DATA_FLOW]
    widest_label = max((_label_size(t)[0] for t in labels), default=0.0)
    return max(1.6, widest_node + widest_label + 0.7)


def _label_size(label: str) -> tuple[float, float]:
    """Size of an edge label's box in inches at full scale, erring on the large side."""
    return (0.62 * len(label) + 1.2) * _LABEL_FONT / 72, 1.9 * _LABEL_FONT / 72


def _node_size(name: str) -> tuple[float, float]:
    """Box size of a node in inches at full scale."""
    return max(0.75, 0.6 * len(name) * _NODE_FONT / 72 + 0.3), _NODE_HEIGHT


def _box(center, size, pad: float = 0.0) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a box of `size` around `center`, grown by `pad`."""
    (x, y), (w, h) = center, size
    return (x - w / 2 - pad, y - h / 2 - pad, x + w / 2 + pad, y + h / 2 + pad)


def _arc_points(start, end, rad: float, count: int) -> np.ndarray:
    """`count` points strictly inside matplotlib's `arc3` curve from `start` to `end`."""
    (x1, y1), (x2, y2) = start, end
    cx = (x1 + x2) / 2 + rad * (y2 - y1)
    cy = (y1 + y2) / 2 - rad * (x2 - x1)
    t = np.arange(1, count + 1)[:, None] / (count + 1)
    u = 1 - t
    return u * u * np.array([x1, y1]) + 2 * u * t * np.array([cx, cy]) + t * t * np.array([x2, y2])


def _choose_rad(start, end, base: float, obstacles: np.ndarray, drawn: np.ndarray) -> float:
    """The `arc3` curvature whose curve crosses the fewest other nodes.

    Candidates bend the edge's middle sideways by fixed distances, so long
    edges curve gently rather than into wide loops. Ties go to the curve
    that keeps clear of the edges already drawn (`drawn`: their sampled
    points), then to the one nearest `base`.
    """
    length = math.dist(start, end)
    if length == 0:
        return base
    samples = max(24, int(length / 0.12))
    candidates = [base]
    for bulge in (0.35, 0.6, 0.9, 1.3, 1.8):
        # The curve's middle moves by half the control point's offset, rad * length.
        rad = min(2 * bulge / length, 0.9)
        candidates += [base + rad, base - rad]
    hits = []
    for rad in candidates:
        points = _arc_points(start, end, rad, samples)
        inside = (
            (points[:, None, 0] >= obstacles[None, :, 0])
            & (points[:, None, 0] <= obstacles[None, :, 2])
            & (points[:, None, 1] >= obstacles[None, :, 1])
            & (points[:, None, 1] <= obstacles[None, :, 3])
        )
        hits.append(int(inside.any(axis=0).sum()))
    fewest = min(hits)
    best = None
    for rad, count in zip(candidates, hits):
        if count != fewest:
            continue
        crowding = 0
        if len(drawn):
            # The middle half only: edges sharing an end are close near it anyway.
            points = _arc_points(start, end, rad, 15)[4:11]
            distances = np.linalg.norm(points[:, None, :] - drawn[None, :, :], axis=-1)
            crowding = int((distances.min(axis=1) < 0.15).sum())
        cost = (crowding, abs(rad - base))
        if best is None or cost < best[0]:
            best = (cost, rad)
    return best[1]


def _label_box(start, end, rad: float, w: float, h: float, taken) -> tuple[float, ...]:
    """The label box along the edge overlapping nodes and other labels the least."""
    spots = (0.5, 0.38, 0.62, 0.3, 0.7, 0.44, 0.56, 0.24, 0.76)
    points = _arc_points(start, end, rad, 99)
    best = None
    for t in spots:
        x, y = points[round(t * 100) - 1]
        box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
        overlap = sum(_overlap(box, other) for other in taken)
        if overlap == 0:
            return box
        if best is None or overlap < best[0]:
            best = (overlap, box)
    return best[1]


def _overlap(a, b) -> float:
    """Area shared by two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _short_label(operation: str) -> str:
    """A compact edge label: `sep_conv_3x3` -> `sep 3x3`, `skip_connect` -> `skip`."""
    text = " ".join(str(operation).replace("_", " ").replace("-", " ").split())
    for long, short in _ABBREVIATIONS:
        text = text.replace(long, short)
    if len(text) > _LABEL_MAX_CHARS:
        text = text[: _LABEL_MAX_CHARS - 1] + "…"
    return text


def _progress_figure(trials: int, title: str, ylabel: str):
    """The empty search-progress figure and its axes (trial numbers along x)."""
    figure = Figure(figsize=(min(16.0, 9.0 + trials / 60), 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.set_xlabel("trial number")
    axes.set_ylabel(ylabel)
    axes.set_title(title or "Search progress")
    axes.grid(True, alpha=0.3)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    return figure, axes


def _plot_regression_progress(records: list[dict[str, Any]], path: str, title: str) -> str:
    """Validation MSE per trial (log scale, lower is better) and the best so far."""
    figure, axes = _progress_figure(len(records), title, "validation MSE (lower is better)")
    points = []
    for index, record in enumerate(records, start=1):
        try:
            value = float(record.get("val_mse"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            points.append((index, value, _ci(record)))
    failed = [
        i
        for i, r in enumerate(records, start=1)
        if str(r.get("status", "")).upper() in ("FAILED", "INVALID")
    ]
    if points:
        xs, ys, errors = zip(*points)
        axes.errorbar(
            xs,
            ys,
            yerr=errors,
            fmt="o",
            color="#1f77b4",
            ecolor="#8fb8de",
            capsize=2,
            label="trial (95% CI)",
            zorder=3,
        )
        best, best_x, best_y = math.inf, [], []
        scores = dict(zip(xs, ys))
        for x in range(xs[0], len(records) + 1):
            best = min(best, scores.get(x, math.inf))
            best_x.append(x)
            best_y.append(best)
        axes.step(
            best_x,
            best_y,
            where="post",
            color="#d62728",
            linewidth=1.6,
            label=f"best so far ({best:.3g})",
        )
        axes.set_yscale("log")
    if failed:
        bottom = blended_transform_factory(axes.transData, axes.transAxes)
        axes.plot(
            failed,
            [0.04] * len(failed),
            "x",
            transform=bottom,
            color="#d62728",
            label=f"failed ({len(failed)})",
            clip_on=False,
            zorder=5,
        )
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)


def _output_merge(graph: CellGraph) -> str | None:
    """`concat` or `sum` when every edge into the output is that plain data flow."""
    operations = {op for _, target, op in graph.edges if target == graph.output}
    return operations.pop() if len(operations) == 1 and operations <= _DATA_FLOW else None


def _trial_order(trials: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records sorted by numeric trial id when all ids are numbers, else as given."""
    records = list(trials)
    ids = [str(r.get("trial_id", "")) for r in records]
    if records and all(i.isdigit() for i in ids):
        return [r for _, r in sorted(zip((int(i) for i in ids), records), key=lambda p: p[0])]
    return records


def _score(record: dict[str, Any]) -> float | None:
    """The record's validation accuracy as a finite float, or None."""
    value = record.get("val_accuracy")
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _ci(record: dict[str, Any]) -> float:
    """The record's 95% interval half-width, 0 when absent."""
    value = record.get("val_ci95")
    try:
        value = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def _save(figure: Figure, path: str) -> str:
    """Writes `figure` as PNG to a temporary file beside `path`, then renames it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format="png", facecolor="white")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


# --------------------------------------------------------------------------- cost and curves


def _goodness_axis(records: Sequence[dict[str, Any]]) -> tuple[str, str, float]:
    """`(record key, axis label, scale)` of the score the records hold (accuracy or MSE)."""
    if any(r.get("val_mse") is not None for r in records):
        return "val_mse", "validation MSE (lower is better)", 1.0
    return "val_accuracy", "validation accuracy (%)", 100.0


def plot_pareto(
    points: dict[str, list[tuple[dict[str, Any], float]]],
    fronts: dict[str, list[str]],
    labels: dict[str, str],
    path: str,
    title: str = "",
) -> str:
    """Score against each cost, one panel per cost, the Pareto front drawn as a staircase.

    `points` maps a cost name to `(record, cost)` of the completed trials that
    have it, `fronts` to the Pareto-optimal trial ids, `labels` to the axis
    label. Front trials are red and labelled with their id. Written atomically.
    """
    costs = list(points)
    figure = Figure(figsize=(10.0, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    records = [record for cost in costs for record, _ in points[cost]]
    key, ylabel, scale = _goodness_axis(records)
    for index, cost in enumerate(costs, start=1):
        axes = figure.add_subplot(1, len(costs), index)
        axes.set_xlabel(labels.get(cost, cost))
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        chosen = set(fronts.get(cost, ()))
        data = [(value, scale * float(r[key]), r["trial_id"]) for r, value in points[cost]]
        if not data:
            axes.text(
                0.5, 0.5, "no trial measured", transform=axes.transAxes, ha="center", color="#777"
            )
            continue
        others = [(x, y) for x, y, t in data if t not in chosen]
        if others:
            axes.plot(*zip(*others), "o", color="#9fb7cf", markersize=5, label="trial")
        best = sorted((x, y, t) for x, y, t in data if t in chosen)
        if best:
            xs, ys, ids = zip(*best)
            axes.step(xs, ys, where="post", color="#d62728", linewidth=1.2, alpha=0.7)
            axes.plot(xs, ys, "o", color="#d62728", markersize=6, label="Pareto-optimal")
            for x, y, trial_id in best:
                axes.annotate(
                    trial_id, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
        if key == "val_mse":
            axes.set_yscale("log")
        if cost == "parameters":
            axes.set_xscale("log")
        axes.margins(0.12)  # room for the labels of the extreme trials
        axes.legend(loc="best", fontsize=8)
    figure.suptitle(title or "Score against cost")
    return _save(figure, path)


def plot_learning_curves(
    curves: Sequence[dict[str, Any]], metric: str, path: str, title: str = ""
) -> str:
    """Every trial's training loss and task metric against episodes, in two panels.

    `curves` are `{"label", "loss": [(episodes, value)], "metric": [...],
    "highlight": bool}`; highlighted trials (the best) are drawn thick and
    labelled, the rest thin. Written atomically.
    """
    figure = Figure(figsize=(10.0, 3.8), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    panels = (("loss", "training loss"), ("metric", f"training {metric}"))
    for index, (key, label) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 2, index)
        axes.set_xlabel("episodes")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        drawn = 0
        for number, curve in enumerate(curves):
            points = curve.get(key) or []
            if not points:
                continue
            xs, ys = zip(*points)
            if key == "metric" and metric == "accuracy":
                ys = [100 * y for y in ys]
            if curve.get("highlight"):
                axes.plot(xs, ys, color="#d62728", linewidth=2.0, label=curve["label"], zorder=3)
            else:
                color = _PALETTE[number % len(_PALETTE)]
                axes.plot(xs, ys, color=color, linewidth=0.9, alpha=0.55)
            drawn += 1
        if not drawn:
            axes.text(0.5, 0.5, "no curves yet", transform=axes.transAxes, ha="center")
        elif any(c.get("highlight") for c in curves):
            axes.legend(loc="best", fontsize=8)
        if key == "metric" and metric == "accuracy":
            axes.set_ylabel("training accuracy (%)")
        if metric == "mse" and drawn:
            axes.set_yscale("log")
    figure.suptitle(title or "Learning curves")
    return _save(figure, path)


def plot_trial_curves(
    curves: Sequence[dict[str, Any]], metric: str, path: str, columns: int = 4
) -> str:
    """One small panel per trial: its training metric, and its validation score at the end.

    `curves` as for `plot_learning_curves`, plus `"title"` and `"score"`
    (`(episodes, value, ci95)` or None). Written atomically.
    """
    count = max(1, len(curves))
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(10.0, 2.3 * rows + 0.3), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    scale = 100.0 if metric == "accuracy" else 1.0
    for index, curve in enumerate(curves, start=1):
        axes = figure.add_subplot(rows, columns, index)
        axes.set_title(curve.get("title", curve["label"]), fontsize=9)
        axes.tick_params(labelsize=7)
        axes.grid(True, alpha=0.3)
        points = curve.get("metric") or []
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, [scale * y for y in ys], color="#1f77b4", linewidth=1.2)
        score = curve.get("score")
        if score is not None:
            x, y, ci = score
            axes.errorbar(
                [x], [scale * y], yerr=[scale * (ci or 0.0)], fmt="*", color="#d62728", ms=9
            )
        if not points and score is None:
            axes.text(0.5, 0.5, "no curve", transform=axes.transAxes, ha="center", color="#777")
        if metric == "mse" and (points or score):
            axes.set_yscale("log")
    figure.supxlabel("episodes (line: training, star: validation with 95% CI)", fontsize=9)
    figure.supylabel("accuracy (%)" if metric == "accuracy" else "MSE", fontsize=9)
    return _save(figure, path)


def plot_run_comparison(runs: Sequence[dict[str, Any]], path: str, title: str = "") -> str:
    """Best score so far against trial number, one line per run (`{"label", "records"}`)."""
    records = [r for run in runs for r in run["records"]]
    key, ylabel, scale = _goodness_axis(records)
    figure, axes = _progress_figure(max((len(run["records"]) for run in runs), default=1), "", "")
    axes.set_title(title or "Best score so far")
    axes.set_ylabel(ylabel.replace("validation", "best validation"))
    lower_is_better = key == "val_mse"
    for number, run in enumerate(runs):
        xs, ys, best = [], [], None
        for index, record in enumerate(_trial_order(run["records"]), start=1):
            value = record.get(key)
            if record.get("status") == "COMPLETED" and isinstance(value, (int, float)):
                value = scale * float(value)
                if best is None or (value < best if lower_is_better else value > best):
                    best = value
            if best is not None:
                xs.append(index)
                ys.append(best)
        if xs:
            axes.step(
                xs,
                ys,
                where="post",
                color=_PALETTE[number % len(_PALETTE)],
                linewidth=1.6,
                label=run["label"],
            )
    if lower_is_better:
        axes.set_yscale("log")
    if any(run["records"] for run in runs):
        axes.legend(loc="best", fontsize=8)
    return _save(figure, path)
