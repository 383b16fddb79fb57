"""PNG charts drawn with PIL only: grouped bar charts for result tables and per-layer learned-scale magnitudes.

CLI::

    python -m peftlab.plots layer-scales path/to/last.ckpt --out scales.png [--group-by param|module] [--log-y]

``layer-scales`` reads a Lightning checkpoint whose ``state_dict`` holds the trainable tensors, groups every tensor
under ``blocks.<i>.`` by block index and by parameter kind (the last name component, e.g. ``rlrr_scale_out`` or
``hta_d``; or the whole path inside the block with ``--group-by module``) and plots the mean |value| per layer.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)  # fmt: skip
MARGIN_LEFT, MARGIN_TOP, MARGIN_BOTTOM, LEGEND_WIDTH = 70, 40, 110, 300
PLOT_HEIGHT = 320
LABEL_CHARS = 40

Series = Mapping[str, Sequence[float | None]]
# glyphs PIL's built-in font lacks, spelled out
ASCII_FALLBACK = {"≤": "<=", "≥": ">=", "†": "(dagger)", "λ": "lambda", "Δ": "Delta ", "–": "-", "—": "-"}


def _printable(text: str) -> str:
    for symbol, spelled in ASCII_FALLBACK.items():
        text = text.replace(symbol, spelled)
    return text


def _font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


@dataclass(frozen=True)
class _Frame:
    """The plot area in pixels and the data range it shows."""

    left: int
    top: int
    right: int
    bottom: int
    low: float
    high: float

    def y(self, value: float) -> float:
        fraction = (value - self.low) / (self.high - self.low)
        return self.bottom - min(max(fraction, 0.0), 1.0) * (self.bottom - self.top)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten)."""
    span = max(high - low, 1e-12)
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(math.ceil((high - first) / step - 1e-9) + 1)]


def _value_range(series: Series, ylim: tuple[float, float] | None) -> tuple[float, float]:
    if ylim is not None:
        return ylim
    values = [v for values in series.values() for v in values if v is not None and math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    low, high = min(0.0, min(values)), max(values)
    ticks = nice_ticks(low, high if high > low else low + 1.0)
    return ticks[0], ticks[-1]


def _tick_label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _rotated_text(image: Image.Image, text: str, anchor_xy: tuple[float, float], angle: int, font) -> None:
    """Paste ``text`` rotated by ``angle`` degrees so that its end sits at ``anchor_xy`` (for axis labels)."""
    text = _printable(text)
    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("RGBA", (right - left + 4, bottom - top + 4), (255, 255, 255, 0))
    ImageDraw.Draw(tile).text((2 - left, 2 - top), text, fill=(0, 0, 0), font=font)
    tile = tile.rotate(angle, expand=True)
    x, y = anchor_xy
    position = (int(x - tile.width), int(y)) if angle != 90 else (int(x), int(y - tile.height / 2))
    image.paste(tile, position, tile)


def _draw_axes(image: Image.Image, frame: _Frame, title: str, ylabel: str, log_y: bool = False) -> None:
    draw, font = ImageDraw.Draw(image), _font()
    ticks = [t for t in nice_ticks(frame.low, frame.high) if frame.low - 1e-9 <= t <= frame.high + 1e-9]
    for tick in ticks:
        y = frame.y(tick)
        draw.line((frame.left, y, frame.right, y), fill=(225, 225, 225))
        label = _tick_label(10**tick if log_y else tick)
        draw.text((frame.left - 6, y), label, fill=(0, 0, 0), font=font, anchor="rm")
    draw.line((frame.left, frame.top, frame.left, frame.bottom), fill=(0, 0, 0))
    draw.line((frame.left, frame.bottom, frame.right, frame.bottom), fill=(0, 0, 0))
    draw.text(((frame.left + frame.right) / 2, 12), _printable(title), fill=(0, 0, 0), font=_font(15), anchor="mt")
    if ylabel:
        _rotated_text(image, ylabel, (8, (frame.top + frame.bottom) / 2), 90, font)


def _draw_legend(draw: ImageDraw.ImageDraw, labels: Sequence[str], x: int, y: int) -> None:
    font = _font(12)
    for i, label in enumerate(labels):
        top = y + 18 * i
        draw.rectangle((x, top + 2, x + 12, top + 14), fill=PALETTE[i % len(PALETTE)])
        label = _printable(label)
        text = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
        draw.text((x + 18, top), text, fill=(0, 0, 0), font=font)


def _canvas(plot_width: int, n_labels: int) -> tuple[Image.Image, _Frame]:
    height = max(MARGIN_TOP + PLOT_HEIGHT + MARGIN_BOTTOM, MARGIN_TOP + 18 * n_labels + 20)
    width = MARGIN_LEFT + plot_width + LEGEND_WIDTH
    image = Image.new("RGB", (width, height), (255, 255, 255))
    frame = _Frame(MARGIN_LEFT, MARGIN_TOP, MARGIN_LEFT + plot_width, MARGIN_TOP + PLOT_HEIGHT, 0.0, 1.0)
    return image, frame


def bar_chart(
    categories: Sequence[str],
    series: Series,
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "",
    errors: Series | None = None,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Grouped bar chart: one group of bars per category, one coloured bar per series (None = no bar).

    Args:
        categories: x-axis categories.
        series: Bar heights per series name, one per category.
        path: PNG file to write.
        title: Chart title.
        ylabel: y-axis label.
        errors: Optional error-bar half-lengths, same shape as ``series``.
        ylim: Fixed y range; default from 0 (or the minimum) to a round number above the maximum.

    Returns:
        The written path.
    """
    bar_width = 14 if len(series) <= 6 else 8
    slot = len(series) * bar_width + 14
    image, frame = _canvas(max(400, slot * len(categories)), len(series))
    frame = _Frame(
        frame.left, frame.top, frame.left + slot * len(categories), frame.bottom, *_value_range(series, ylim)
    )
    _draw_axes(image, frame, title, ylabel)
    draw = ImageDraw.Draw(image)
    for i, (name, values) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        for j, value in enumerate(values):
            if value is None or not math.isfinite(value):
                continue
            x = frame.left + j * slot + 7 + i * bar_width
            draw.rectangle((x, frame.y(value), x + bar_width - 2, frame.y(max(frame.low, 0.0))), fill=color)
            error = errors.get(name, [None] * len(values))[j] if errors else None
            if error:
                middle = x + (bar_width - 2) / 2
                draw.line((middle, frame.y(value - error), middle, frame.y(value + error)), fill=(0, 0, 0))
    for j, category in enumerate(categories):
        _rotated_text(image, category, (frame.left + j * slot + slot / 2 + 4, frame.bottom + 4), 45, _font(12))
    _draw_legend(draw, list(series), frame.right + 20, frame.top)
    return _save(image, path)


def line_chart(
    xs: Sequence[float],
    series: Series,
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    log_y: bool = False,
) -> Path:
    """Line chart with markers, one line per series over the shared ``xs`` (None = gap). Returns the path."""
    if log_y:
        series = {name: [math.log10(v) if v and v > 0 else None for v in values] for name, values in series.items()}
    image, frame = _canvas(max(400, 40 * len(xs)), len(series))
    frame = _Frame(frame.left, frame.top, frame.right, frame.bottom, *_value_range(series, None))
    if log_y:
        values = [v for vs in series.values() for v in vs if v is not None] or [0.0]
        frame = _Frame(
            frame.left, frame.top, frame.right, frame.bottom, math.floor(min(values)), math.ceil(max(values))
        )
    _draw_axes(image, frame, title, ylabel + (" (log scale)" if log_y else ""), log_y)
    draw, font = ImageDraw.Draw(image), _font(12)
    step = (frame.right - frame.left) / max(len(xs), 1)
    x_at = [frame.left + step * (i + 0.5) for i in range(len(xs))]
    for x, value in zip(x_at, xs, strict=True):
        draw.text((x, frame.bottom + 6), _tick_label(value), fill=(0, 0, 0), font=font, anchor="mt")
    draw.text(((frame.left + frame.right) / 2, frame.bottom + 28), xlabel, fill=(0, 0, 0), font=font, anchor="mt")
    for i, values in enumerate(series.values()):
        color = PALETTE[i % len(PALETTE)]
        points = [(x, frame.y(v)) if v is not None else None for x, v in zip(x_at, values, strict=True)]
        for start, end in zip(points, points[1:], strict=False):
            if start and end:
                draw.line((*start, *end), fill=color, width=2)
        for point in filter(None, points):
            draw.ellipse((point[0] - 3, point[1] - 3, point[0] + 3, point[1] + 3), fill=color)
    _draw_legend(draw, list(series), frame.right + 20, frame.top)
    return _save(image, path)


def _save(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


# ----------------------------------------------------------------------------------------------- layer scales

_BLOCK_KEY = re.compile(r"(?:^|\.)blocks\.(\d+)\.(.+)$")


def load_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint (or the dict itself when it is a plain state dict)."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint}: expected a Lightning checkpoint with a 'state_dict', got {type(payload)}")
    return state


def layer_scale_magnitudes(
    state_dict: Mapping[str, torch.Tensor], group_by: str = "param", match: str | None = None
) -> dict[str, dict[int, float]]:
    """Mean |value| of the tensors under ``blocks.<i>.``, per parameter kind and block index.

    Args:
        state_dict: Tensors keyed like ``model.blocks.3.attn.qkv.parts.q.rlrr_scale_out``.
        group_by: ``param`` groups by the last name component (``rlrr_scale_out``), ``module`` by the whole path
            inside the block (``attn.qkv.parts.q.rlrr_scale_out``).
        match: Optional regex; only kinds it matches (``re.search``) are kept.

    Returns:
        ``{kind: {block: mean |value| over all elements of that kind in that block}}``, kinds sorted by name.
    """
    if group_by not in ("param", "module"):
        raise ValueError(f"group_by must be 'param' or 'module', got {group_by!r}")
    totals: dict[str, dict[int, list[float]]] = {}
    for key, tensor in state_dict.items():
        found = _BLOCK_KEY.search(key)
        if found is None or not torch.is_tensor(tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        kind = found[2].rsplit(".", 1)[-1] if group_by == "param" else found[2]
        if match and not re.search(match, kind):
            continue
        total = totals.setdefault(kind, {}).setdefault(int(found[1]), [0.0, 0])
        total[0] += tensor.detach().abs().double().sum().item()
        total[1] += tensor.numel()
    return {kind: {b: s / n for b, (s, n) in sorted(blocks.items())} for kind, blocks in sorted(totals.items())}


def plot_layer_scales(
    checkpoint: str | Path, out: str | Path, group_by: str = "param", match: str | None = None, log_y: bool = False
) -> dict[str, dict[int, float]]:
    """Plot mean |value| per layer and parameter kind from a checkpoint into ``out`` (PNG); returns the numbers."""
    magnitudes = layer_scale_magnitudes(load_state_dict(checkpoint), group_by, match)
    if not magnitudes:
        raise ValueError(f"{checkpoint}: no floating-point tensors under 'blocks.<i>.' (match={match!r})")
    blocks = sorted({b for per_block in magnitudes.values() for b in per_block})
    series = {kind: [per_block.get(b) for b in blocks] for kind, per_block in magnitudes.items()}
    title = f"Mean |value| per layer: {Path(checkpoint).name}"
    line_chart(blocks, series, out, title=title, xlabel="block", ylabel="mean |value|", log_y=log_y)
    return magnitudes


def _format_magnitudes(magnitudes: dict[str, dict[int, float]]) -> str:
    blocks = sorted({b for per_block in magnitudes.values() for b in per_block})
    lines = ["kind".ljust(40) + "".join(f"{b:>9d}" for b in blocks)]
    for kind, per_block in magnitudes.items():
        cells = "".join(f"{per_block[b]:9.4f}" if b in per_block else " " * 9 for b in blocks)
        lines.append(kind[:40].ljust(40) + cells)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peftlab.plots", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scales = commands.add_parser("layer-scales", help="per-layer mean |value| of the trainable tensors of a checkpoint")
    scales.add_argument("checkpoint", type=Path)
    scales.add_argument("--out", type=Path, required=True, help="PNG file to write")
    scales.add_argument("--group-by", choices=("param", "module"), default="param")
    scales.add_argument("--match", help="regex on the parameter kind, e.g. 'scale|hta_d'")
    scales.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    args = parser.parse_args(argv)
    try:
        magnitudes = plot_layer_scales(args.checkpoint, args.out, args.group_by, args.match, args.log_y)
    except (OSError, ValueError, RuntimeError) as error:
        parser.exit(1, f"error: {error}\n")
    print(_format_magnitudes(magnitudes))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
