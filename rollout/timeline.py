"""The timeline picture of one changed worker: its per-second error rate by version against the baseline and
the ErrorRate guard's threshold, with a mark for the deploy, each traffic step, the breach, the rollback and
its verification, and the time the tail was blind shaded.

One layout (:func:`build_scene`: lines, boxes and text in pixels) is rendered twice: as SVG text, written
directly, and as a PNG with Pillow (imported only here, only when a report is written).  Nothing in this
module runs during a rollout.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 960, 420
LEFT, RIGHT = 64, 20
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
#: Each pixel of the layout is this many pixels of the PNG (crisp in chat); drawn at twice that, then shrunk.
PNG_SCALE = 1.5

ROLE_COLORS = {"old": "#1f77b4", "new": "#ff7f0e"}
OTHER_COLORS = ("#2ca02c", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
MARK_COLORS = {"deploy": "#333333", "step": "#777777", "breach": "#d62728", "rollback": "#9467bd",
               "verified": "#2ca02c", "unverified": "#d62728"}
BLIND_FILL = "#e8e8e8"

Anchor = Literal["start", "middle", "end"]


@dataclass(frozen=True, slots=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    color: str
    width: float = 1.0
    dash: bool = False


@dataclass(frozen=True, slots=True)
class Polyline:
    points: tuple[tuple[float, float], ...]
    color: str
    width: float = 1.5


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float
    w: float
    h: float
    fill: str
    stroke: str | None = None


@dataclass(frozen=True, slots=True)
class Text:
    x: float
    y: float  # the baseline
    text: str
    size: float = 11.0
    color: str = "#222222"
    anchor: Anchor = "start"
    bold: bool = False
    #: a white outline, so that the text stays readable over the lines it crosses
    halo: bool = False


Item = Line | Polyline | Box | Text


@dataclass(slots=True)
class Scene:
    width: int
    height: int
    title: str
    items: list[Item] = field(default_factory=list)


@dataclass(slots=True)
class TimelineFiles:
    """What :func:`write_timeline` wrote (``{"svg": path, "png": path}``) and what it could not."""

    files: dict[str, Path]
    warnings: list[str]


def file_stem(worker: str) -> str:
    return "timeline-" + re.sub(r"[^A-Za-z0-9._-]", "_", worker)


def write_timeline(report: dict[str, Any], worker: str, directory: Path) -> TimelineFiles:
    """Write ``timeline-WORKER.svg`` and ``timeline-WORKER.png`` into ``directory``; a PNG that cannot be drawn
    (no Pillow, say) is a warning, the SVG stays."""
    scene = build_scene(report, worker)
    stem = file_stem(worker)
    svg = directory / f"{stem}.svg"
    svg.write_text(to_svg(scene), encoding="utf-8")
    out = TimelineFiles({"svg": svg}, [])
    png = directory / f"{stem}.png"
    try:
        write_png(scene, png)
    except ImportError:
        out.warnings.append("no PNG: Pillow is not installed (the SVG is there)")
    except Exception as exc:  # the SVG is enough; say why the PNG is missing
        out.warnings.append(f"no PNG: {type(exc).__name__}: {exc} (the SVG is there)")
    else:
        out.files["png"] = png
    return out


# -- layout --------------------------------------------------------------------------------------------
def build_scene(report: dict[str, Any], worker: str) -> Scene:
    """Lay out the timeline of ``worker`` from report.json's ``series`` and ``timelines``."""
    timeline = report["timelines"][worker]
    series: dict[str, list[list[float]]] = report["series"]["workers"][worker]
    roles: dict[str, str] = timeline.get("roles", {})
    last_row = max((rows[-1][0] + 1 for rows in series.values() if rows), default=1.0)
    span = max(float(timeline.get("end_t") or 0.0), last_row, 1.0)
    rates = [r[2] / r[1] for rows in series.values() for r in rows if r[1]]
    baseline, threshold = timeline.get("baseline_rate"), timeline.get("threshold_rate")
    top_rate = max([*rates, 0.0])
    y_max = min(1.0, max(0.02, top_rate * 1.08, (threshold or 0.0) * 1.3, (baseline or 0.0) * 1.3))
    y_step = _nice_step(y_max, 5)
    y_max = min(1.0, math.ceil(y_max / y_step - 1e-9) * y_step)

    scene = Scene(WIDTH, HEIGHT, f"{worker}: error rate per second by version")
    right = WIDTH - RIGHT

    def x_of(t: float) -> float:
        return LEFT + (right - LEFT) * max(0.0, min(t, span)) / span

    marks = [m for m in timeline.get("marks", []) if -1 <= m["t"] <= span + 1]
    lanes = _lanes([(x_of(m["t"]), _label_width(m["label"])) for m in marks], right)
    lane_count = max(lanes, default=-1) + 1
    top = 56 + 14 * lane_count + 6
    bottom = HEIGHT - 74

    def y_of(rate: float) -> float:
        return bottom - (bottom - top) * max(0.0, min(rate, y_max)) / y_max

    add = scene.items.append
    add(Box(0, 0, WIDTH, HEIGHT, "#ffffff"))
    add(Text(LEFT, 22, scene.title, size=15, bold=True))
    add(Text(LEFT, 40, f"rollout {report['rollout_id']} · {report['plan']} · t = 0 at {report['series']['start']}"
                       f" (UTC) · {report['outcome'].replace('_', ' ')}", size=11, color="#555555"))
    blind = [(start, end) for start, end in timeline.get("blind", []) if end > 0 and start < span]
    for start, end in blind:
        add(Box(x_of(start), top, max(1.0, x_of(end) - x_of(start)), bottom - top, BLIND_FILL))
    # grid and axes
    for i in range(int(round(y_max / y_step)) + 1):
        rate = i * y_step
        y = y_of(rate)
        add(Line(LEFT, y, right, y, "#eeeeee" if i else "#999999"))
        add(Text(LEFT - 6, y + 4, _pct(rate, y_step), size=10, color="#555555", anchor="end"))
    x_step = _nice_seconds(span, 10)
    t = 0.0
    while t <= span + 1e-9:
        x = x_of(t)
        add(Line(x, bottom, x, bottom + 4, "#999999"))
        add(Text(x, bottom + 16, _clock(t), size=10, color="#555555", anchor="middle"))
        t += x_step
    add(Line(LEFT, top, LEFT, bottom, "#999999"))
    add(Text((LEFT + right) / 2, bottom + 32, "time since the baseline began", size=10, color="#555555",
             anchor="middle"))
    # baseline and threshold
    if baseline is not None:
        add(Line(LEFT, y_of(baseline), right, y_of(baseline), "#888888", 1.2, dash=True))
        add(Text(right - 4, y_of(baseline) - 4, f"baseline {_pct(baseline)}", size=10, color="#666666",
                 anchor="end", halo=True))
    if threshold is not None:
        add(Line(LEFT, y_of(threshold), right, y_of(threshold), "#d62728", 1.2, dash=True))
        add(Text(right - 4, y_of(threshold) - 4, f"threshold {_pct(threshold)}", size=10, color="#d62728",
                 anchor="end", halo=True))
    # the error rate of each version
    colors = _colors(list(series), roles)
    for version, rows in series.items():
        for run in _runs(rows):
            points = tuple((x_of(r[0] + 0.5), y_of(r[2] / r[1])) for r in run)
            if len(points) == 1:
                x, y = points[0]
                points = ((x - 1.5, y), (x + 1.5, y))
            add(Polyline(points, colors[version]))
    # marks
    for mark, lane in zip(marks, lanes, strict=True):
        x = x_of(mark["t"])
        color = MARK_COLORS.get(mark["kind"], "#333333")
        label_y = 56 + 14 * lane + 10
        add(Line(x, label_y + 3, x, bottom, color, 1.3, dash=mark["kind"] == "step"))
        anchor: Anchor = "start" if x + 3 + _label_width(mark["label"]) <= right else "end"
        add(Text(x + 3 if anchor == "start" else x - 3, label_y, mark["label"], size=11, color=color,
                 anchor=anchor, bold=mark["kind"] in ("breach", "unverified"), halo=True))
    # legend
    x = float(LEFT)
    y = HEIGHT - 16
    for version in series:
        role = roles.get(version)
        text = f"{role} {version[:8]}" if role else version[:20]
        add(Line(x, y - 4, x + 18, y - 4, colors[version], 2.5))
        add(Text(x + 22, y, text, size=11))
        x += 30 + _label_width(text)
    if baseline is not None:
        add(Line(x, y - 4, x + 18, y - 4, "#888888", 1.2, dash=True))
        add(Text(x + 22, y, "baseline", size=11))
        x += 30 + _label_width("baseline")
    if threshold is not None:
        add(Line(x, y - 4, x + 18, y - 4, "#d62728", 1.2, dash=True))
        add(Text(x + 22, y, "threshold (baseline + margin)", size=11))
        x += 30 + _label_width("threshold (baseline + margin)")
    if blind:
        add(Box(x, y - 10, 18, 10, BLIND_FILL, "#bbbbbb"))
        add(Text(x + 22, y, "blind (tail disconnected)", size=11))
    return scene


def _runs(rows: Sequence[Sequence[float]]) -> Iterator[list[Sequence[float]]]:
    """Consecutive seconds with requests (a second without any breaks the line)."""
    run: list[Sequence[float]] = []
    for row in rows:
        if row[1]:
            run.append(row)
        elif run:
            yield run
            run = []
    if run:
        yield run


def _lanes(labels: Sequence[tuple[float, float]], right: float) -> list[int]:
    """A row above the plot for each mark's label, so that no two labels overlap."""
    ends: list[float] = []
    lanes = []
    for x, width in labels:
        start, end = (x, x + 3 + width) if x + 3 + width <= right else (x - 3 - width, x)
        for lane, last in enumerate(ends):
            if start >= last + 6:
                ends[lane] = end
                lanes.append(lane)
                break
        else:
            ends.append(end)
            lanes.append(len(ends) - 1)
    return lanes


def _label_width(text: str, size: float = 11.0) -> float:
    return 0.58 * size * len(text)


def _colors(versions: Sequence[str], roles: dict[str, str]) -> dict[str, str]:
    others = iter(OTHER_COLORS * (len(versions) // len(OTHER_COLORS) + 1))
    return {v: ROLE_COLORS.get(roles.get(v, ""), "") or next(others) for v in versions}


def _nice_step(top: float, ticks: int) -> float:
    raw = top / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _nice_seconds(span: float, ticks: int) -> float:
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
    return float(next((s for s in steps if span / s <= ticks), steps[-1]))


def _clock(t: float) -> str:
    seconds = int(round(t))
    if seconds < 60:
        return f"{seconds}s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" + (f"{secs:02d}s" if secs else "")
    return f"{minutes}m" + (f"{secs:02d}s" if secs else "")


def _pct(rate: float, step: float | None = None) -> str:
    digits = 0 if step is not None and step >= 0.01 else 1
    return f"{rate * 100:.{digits}f}%"


# -- SVG -----------------------------------------------------------------------------------------------
def to_svg(scene: Scene) -> str:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{scene.width}" height="{scene.height}" '
           f'viewBox="0 0 {scene.width} {scene.height}" font-family="{FONT}">',
           f"<title>{escape(scene.title)}</title>"]
    for item in scene.items:
        if isinstance(item, Box):
            stroke = f' stroke="{item.stroke}"' if item.stroke else ""
            out.append(f'<rect x="{item.x:.1f}" y="{item.y:.1f}" width="{item.w:.1f}" height="{item.h:.1f}" '
                       f'fill="{item.fill}"{stroke}/>')
        elif isinstance(item, Line):
            dash = ' stroke-dasharray="6 4"' if item.dash else ""
            out.append(f'<line x1="{item.x1:.1f}" y1="{item.y1:.1f}" x2="{item.x2:.1f}" y2="{item.y2:.1f}" '
                       f'stroke="{item.color}" stroke-width="{item.width:g}"{dash}/>')
        elif isinstance(item, Polyline):
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in item.points)
            out.append(f'<polyline points="{points}" fill="none" stroke="{item.color}" '
                       f'stroke-width="{item.width:g}" stroke-linejoin="round"/>')
        else:
            weight = ' font-weight="bold"' if item.bold else ""
            if item.halo:
                weight += ' stroke="#ffffff" stroke-width="3" paint-order="stroke"'
            out.append(f'<text x="{item.x:.1f}" y="{item.y:.1f}" font-size="{item.size:g}" fill="{item.color}" '
                       f'text-anchor="{item.anchor}"{weight}>{escape(item.text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- PNG -----------------------------------------------------------------------------------------------
def write_png(scene: Scene, path: Path) -> None:
    """Draw the scene with Pillow at twice the PNG's size, then shrink it (smooth lines and text)."""
    from PIL import Image, ImageDraw, ImageFont

    k = PNG_SCALE * 2
    image = Image.new("RGB", (round(scene.width * k), round(scene.height * k)), "#ffffff")
    draw = ImageDraw.Draw(image)
    fonts: dict[float, Any] = {}

    def font(size: float) -> Any:
        if size not in fonts:
            fonts[size] = ImageFont.load_default(size=size * k)
        return fonts[size]

    for item in scene.items:
        if isinstance(item, Box):
            draw.rectangle((item.x * k, item.y * k, (item.x + item.w) * k, (item.y + item.h) * k), fill=item.fill,
                           outline=item.stroke)
        elif isinstance(item, Line):
            width = max(1, round(item.width * k))
            for x1, y1, x2, y2 in (_dashes(item) if item.dash else [(item.x1, item.y1, item.x2, item.y2)]):
                draw.line((x1 * k, y1 * k, x2 * k, y2 * k), fill=item.color, width=width)
        elif isinstance(item, Polyline):
            draw.line([(x * k, y * k) for x, y in item.points], fill=item.color, width=max(1, round(item.width * k)),
                      joint="curve")
        else:
            anchor = {"start": "ls", "middle": "ms", "end": "rs"}[item.anchor]
            offsets = ((0.0, 0.0), (0.35, 0.0)) if item.bold else ((0.0, 0.0),)
            for dx, dy in offsets:
                draw.text(((item.x + dx) * k, (item.y + dy) * k), item.text, fill=item.color, font=font(item.size),
                          anchor=anchor, stroke_width=round(1.5 * k) if item.halo else 0, stroke_fill="#ffffff")
    image = image.resize((round(scene.width * PNG_SCALE), round(scene.height * PNG_SCALE)), Image.Resampling.LANCZOS)
    image.save(path, format="PNG", optimize=True)


def _dashes(line: Line, on: float = 6.0, off: float = 4.0) -> list[tuple[float, float, float, float]]:
    length = math.hypot(line.x2 - line.x1, line.y2 - line.y1)
    if length == 0:
        return []
    ux, uy = (line.x2 - line.x1) / length, (line.y2 - line.y1) / length
    out = []
    pos = 0.0
    while pos < length:
        end = min(length, pos + on)
        out.append((line.x1 + ux * pos, line.y1 + uy * pos, line.x1 + ux * end, line.y1 + uy * end))
        pos = end + off
    return out
