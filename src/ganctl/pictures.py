"""Pictures drawn with pillow and numpy: no plotting library needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ganctl.fileio import write_atomic

# Diverging map (Moreland's cool-warm end points): low critic values blue, high red.
_LOW = np.array([59, 76, 192], dtype=np.float64)
_MID = np.array([236, 236, 236], dtype=np.float64)
_HIGH = np.array([180, 4, 38], dtype=np.float64)
REAL_COLOUR = (255, 140, 0)  # orange
FAKE_COLOUR = (0, 150, 60)  # green
_LEVELS = 14  # iso-lines drawn over the critic's value field


def _diverging(t: np.ndarray) -> np.ndarray:
    """t in [-1, 1] -> RGB uint8."""
    t = np.clip(t, -1.0, 1.0)[..., None]
    rgb = np.where(t < 0, _MID + (-t) * (_LOW - _MID), _MID + t * (_HIGH - _MID))
    return rgb.astype(np.uint8)


def field_image(values: np.ndarray) -> np.ndarray:
    """A critic value grid (H, W), row 0 at the top, as RGB with iso-lines. The critic is
    only defined up to a constant, so values are centred on their median."""
    finite = values[np.isfinite(values)]  # a diverged critic can return inf or nan
    values = np.nan_to_num(
        values,
        nan=float(np.median(finite)) if finite.size else 0.0,
        posinf=float(finite.max()) if finite.size else 0.0,
        neginf=float(finite.min()) if finite.size else 0.0,
    )
    centred = values - np.median(values)
    scale = np.percentile(np.abs(centred), 99) or 1.0
    rgb = _diverging(centred / scale)
    level = np.floor((centred / scale) * _LEVELS / 2).astype(np.int64)
    edge = np.zeros(values.shape, dtype=bool)
    edge[:, 1:] |= level[:, 1:] != level[:, :-1]
    edge[1:, :] |= level[1:, :] != level[:-1, :]
    rgb[edge] = (rgb[edge] * 0.55).astype(np.uint8)
    return rgb


def scatter_over_field(
    path: Path | None,
    extent: tuple[float, float, float, float],
    real: np.ndarray,
    fake: np.ndarray,
    field: np.ndarray | None = None,
    title: str = "",
    size: int = 512,
) -> Image.Image:
    """Real (orange) and generated (green) points over the critic's value field, written to
    `path` unless it is None, and returned. extent = (xmin, xmax, ymin, ymax); field has shape
    (H, W) over that extent, y upwards."""
    xmin, xmax, ymin, ymax = extent
    if field is not None:
        smooth = Image.fromarray(np.ascontiguousarray(np.flipud(field), dtype=np.float32)).resize(
            (size, size), Image.BILINEAR
        )
        canvas = Image.fromarray(field_image(np.asarray(smooth, dtype=np.float64)), "RGB")
    else:
        canvas = Image.new("RGB", (size, size), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)

    def to_pixels(points: np.ndarray) -> np.ndarray:
        px = (points[:, 0] - xmin) / (xmax - xmin) * (size - 1)
        py = (ymax - points[:, 1]) / (ymax - ymin) * (size - 1)
        return np.stack([px, py], axis=1)

    for points, colour in ((real, REAL_COLOUR), (fake, FAKE_COLOUR)):
        for x, y in to_pixels(points):
            if 0 <= x < size and 0 <= y < size:
                draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=colour)

    framed = Image.new("RGB", (size, size + 22), (255, 255, 255))
    framed.paste(canvas, (0, 22))
    label = ImageDraw.Draw(framed)
    label.text((6, 5), title, fill=(0, 0, 0))
    label.text((size - 150, 5), "real", fill=REAL_COLOUR)
    label.text((size - 110, 5), "generated", fill=FAKE_COLOUR)
    if path is not None:
        save_image(path, framed)
    return framed


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images (n, C, H, W) in [-1, 1] -> uint8 (n, H, W, C) with C 1 or 3."""
    x = np.clip((np.asarray(images, dtype=np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return x.transpose(0, 2, 3, 1)


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> Image.Image:
    """A grid of images (n, C, H, W) in [-1, 1], `columns` wide (default about square),
    separated by `pad` pixels of dark grey."""
    x = to_uint8(images)
    n, h, w, c = x.shape
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 40, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[top : top + h, left : left + w] = x[i]
    return Image.fromarray(np.ascontiguousarray(canvas[..., 0] if c == 1 else canvas))


def save_image(path: Path, image: Image.Image) -> None:
    """Write a PNG atomically."""
    write_atomic(Path(path), lambda tmp: image.save(tmp, format="PNG"))


SET_COLOURS = {"real": (230, 120, 0), "fake": (0, 140, 60), "interp": (40, 80, 200), "real+noise": (150, 60, 160)}


def histograms(
    path: Path | None, values: dict[str, np.ndarray], title: str, bins: int = 60, size: tuple[int, int] = (640, 360)
) -> Image.Image:
    """Overlaid step histograms of non-negative values (gradient norms) per named set, with a
    vertical line at 1, drawn with pillow; written to `path` unless it is None, and returned."""
    w, h = size
    left, right, top, bottom = 50, 20, 30, 40
    hi = max(1.2, max(float(np.max(v)) for v in values.values()) * 1.05)
    edges = np.linspace(0.0, hi, bins + 1)
    counts = {k: np.histogram(v, bins=edges)[0] / max(len(v), 1) for k, v in values.items()}
    top_share = max(float(c.max()) for c in counts.values()) or 1.0
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x_of = lambda v: left + (w - left - right) * v / hi  # noqa: E731
    y_of = lambda c: h - bottom - (h - top - bottom) * c / top_share  # noqa: E731
    draw.line([(left, h - bottom), (w - right, h - bottom)], fill=(0, 0, 0))
    draw.line([(x_of(1.0), top), (x_of(1.0), h - bottom)], fill=(120, 120, 120))
    draw.text((x_of(1.0) + 3, top), "1", fill=(80, 80, 80))
    for tick in np.linspace(0.0, hi, 5):
        draw.text((x_of(tick) - 10, h - bottom + 5), f"{tick:.2g}", fill=(0, 0, 0))
    for i, (name, c) in enumerate(counts.items()):
        colour = SET_COLOURS.get(name, (0, 0, 0))
        points = []
        for b in range(bins):
            points += [(x_of(edges[b]), y_of(c[b])), (x_of(edges[b + 1]), y_of(c[b]))]
        draw.line(points, fill=colour, width=2)
        draw.text((w - right - 120, top + 14 * i), name, fill=colour)
    draw.text((left, 8), title, fill=(0, 0, 0))
    if path is not None:
        save_image(path, canvas)
    return canvas


RUN_COLOURS = ((40, 80, 200), (200, 60, 40), (0, 140, 60), (150, 60, 160), (230, 120, 0), (0, 150, 160), (90, 90, 90))


def _nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    raw = (hi - lo) / max(count - 1, 1)
    power = 10.0 ** np.floor(np.log10(raw)) if raw > 0 else 1.0
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw) if raw > 0 else 1.0
    ticks = np.arange(np.ceil(lo / step), np.floor(hi / step) + 1) * step
    return np.where(np.abs(ticks) < step * 1e-9, 0.0, ticks) + 0.0  # no "-0" label


def quantile_trajectories(
    path: Path, runs: dict[str, dict[str, np.ndarray]], title: str, size: tuple[int, int] = (760, 400)
) -> None:
    """Gradient-norm quantiles against training step, one colour per run, on a log10 axis
    (clipped critics' norms vanish by orders of magnitude): the median as a thick line, the 5 %
    and 95 % quantiles thin, and a grey line at norm 1. Exact zeros (dead ReLU regions) sit on
    the axis marked 0. `runs` maps a name to arrays `step`, `q05`, `q50`, `q95`."""
    w, h = size
    left, right, top, bottom = 60, 130, 30, 40
    steps = np.concatenate([r["step"] for r in runs.values()]).astype(np.float64)
    values = np.concatenate([np.concatenate([r["q05"], r["q50"], r["q95"]]) for r in runs.values()])
    positive = values[values > 0]
    logs = np.log10(positive) if positive.size else np.zeros(1)
    lo, hi = np.floor(min(float(logs.min()), -0.5)), np.ceil(max(float(logs.max()), 0.5))
    if positive.size < values.size:
        lo -= 1  # one decade of room below the smallest positive value for the zeros
    s_lo, s_hi = float(steps.min()), float(steps.max())
    if s_hi == s_lo:
        s_lo, s_hi = s_lo - 1.0, s_hi + 1.0
    x_of = lambda s: left + (w - left - right) * (s - s_lo) / (s_hi - s_lo)  # noqa: E731
    y_of = lambda v: h - bottom - (h - top - bottom) * ((np.log10(v) if v > 0 else lo) - lo) / (hi - lo)  # noqa: E731
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.line([(left, h - bottom), (w - right, h - bottom)], fill=(0, 0, 0))
    draw.line([(left, top), (left, h - bottom)], fill=(0, 0, 0))
    decades = range(int(lo) + (1 if positive.size < values.size else 0), int(hi) + 1)
    label_every = max(1, len(decades) // 8)
    for i, e in enumerate(decades):
        y = y_of(10.0**e)
        draw.line([(left - 4, y), (left, y)], fill=(0, 0, 0))
        if i % label_every == 0 or e == 0:
            draw.text((6, y - 6), f"1e{e}", fill=(0, 0, 0))
    if positive.size < values.size:
        draw.text((6, h - bottom - 6), "0", fill=(0, 0, 0))
    draw.line([(left, y_of(1.0)), (w - right, y_of(1.0))], fill=(160, 160, 160))
    for tick in _nice_ticks(s_lo, s_hi):
        draw.line([(x_of(tick), h - bottom), (x_of(tick), h - bottom + 4)], fill=(0, 0, 0))
        draw.text((x_of(tick) - 12, h - bottom + 6), f"{tick:g}", fill=(0, 0, 0))
    draw.text(((w - right + left) // 2 - 15, h - 16), "step", fill=(0, 0, 0))
    for i, (name, r) in enumerate(runs.items()):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for key, width in (("q05", 1), ("q95", 1), ("q50", 3)):
            points = [(x_of(float(s)), y_of(float(v))) for s, v in zip(r["step"], r[key])]
            if len(points) > 1:
                draw.line(points, fill=colour, width=width)
            for x, y in points:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.line([(w - right + 10, top + 10 + 16 * i), (w - right + 28, top + 10 + 16 * i)], fill=colour, width=3)
        draw.text((w - right + 32, top + 4 + 16 * i), name[:16], fill=colour)
    draw.text((left, 8), title, fill=(0, 0, 0))
    save_image(path, canvas)


def line_chart(
    series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, y_label: str = "", size: tuple[int, int] = (720, 300)
) -> Image.Image:
    """Lines of y against step on linear axes, one colour per named series, legend on the right."""
    w, h = size
    left, right, top, bottom = 70, 130, 30, 36
    xs = np.concatenate([np.asarray(x, dtype=np.float64) for x, _ in series.values()] or [np.zeros(1)])
    ys = np.concatenate([np.asarray(y, dtype=np.float64) for _, y in series.values()] or [np.zeros(1)])
    finite = ys[np.isfinite(ys)]
    y_lo, y_hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if y_hi - y_lo < 1e-12:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    pad = 0.05 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    x_lo, x_hi = float(xs.min()), float(xs.max())
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1.0, x_hi + 1.0
    x_of = lambda v: left + (w - left - right) * (v - x_lo) / (x_hi - x_lo)  # noqa: E731
    y_of = lambda v: h - bottom - (h - top - bottom) * (v - y_lo) / (y_hi - y_lo)  # noqa: E731
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.line([(left, h - bottom), (w - right, h - bottom)], fill=(0, 0, 0))
    draw.line([(left, top), (left, h - bottom)], fill=(0, 0, 0))
    for tick in _nice_ticks(y_lo, y_hi):
        draw.line([(left - 4, y_of(tick)), (left, y_of(tick))], fill=(0, 0, 0))
        draw.text((6, y_of(tick) - 6), f"{tick:.3g}", fill=(0, 0, 0))
    for tick in _nice_ticks(x_lo, x_hi):
        draw.line([(x_of(tick), h - bottom), (x_of(tick), h - bottom + 4)], fill=(0, 0, 0))
        draw.text((x_of(tick) - 12, h - bottom + 6), f"{tick:g}", fill=(0, 0, 0))
    for i, (name, (x, y)) in enumerate(series.items()):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        points = [(x_of(float(a)), y_of(float(b))) for a, b in zip(x, y) if np.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            px, py = points[0]
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.line([(w - right + 10, top + 10 + 16 * i), (w - right + 28, top + 10 + 16 * i)], fill=colour, width=3)
        draw.text((w - right + 32, top + 4 + 16 * i), name[:16], fill=colour)
    draw.text((left, 8), f"{title}" + (f"  ({y_label})" if y_label else ""), fill=(0, 0, 0))
    return canvas


def stack(images: list[Image.Image], vertical: bool = True, pad: int = 6) -> Image.Image:
    """Images one below (or beside) the other on white."""
    if vertical:
        size = (max(i.width for i in images), sum(i.height for i in images) + pad * (len(images) - 1))
    else:
        size = (sum(i.width for i in images) + pad * (len(images) - 1), max(i.height for i in images))
    canvas = Image.new("RGB", size, (255, 255, 255))
    offset = 0
    for image in images:
        canvas.paste(image, (0, offset) if vertical else (offset, 0))
        offset += (image.height if vertical else image.width) + pad
    return canvas
