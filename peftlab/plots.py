"""PNG charts with matplotlib (Agg, no display needed): grouped bar charts for result tables and the per-layer plot of
what a method learned, as deviation from its initial value.

Needs the optional extra: ``pip install 'peftlab[plots]'`` (included in ``dev``).

CLI::

    peftlab-plots layer-scales path/to/last.ckpt --out scales.png [--group-by param|module] [--match REGEX] [--log-y]

``layer-scales`` reads a Lightning checkpoint whose ``state_dict`` holds the trainable tensors, groups every tensor
under ``blocks.<i>.`` by block index and by parameter kind (the last name component, e.g. ``rlrr_scale_out`` or
``hta_diag``; or the whole path inside the block with ``--group-by module``) and plots, per layer, the mean
``|value − init|``: scales that start near 1 and shifts that start near 0 become comparable on one axis. The initial
values are rebuilt from the run config stored in the checkpoint (the model is built seeded, so its init is the
training run's init); ``--init`` takes them from another checkpoint instead. The title names method, task and run.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

#: matplotlib's default colour cycle ("tab10"), as RGB bytes; series use it in order
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
LABEL_CHARS = 40

Series = Mapping[str, Sequence[float | None]]


def _pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "plots need matplotlib: pip install 'peftlab[plots]' (or pip install matplotlib)", name="matplotlib"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(i: int) -> tuple[float, float, float]:
    return tuple(c / 255 for c in PALETTE[i % len(PALETTE)])


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _finite(value: float | None) -> bool:
    return value is not None and value == value and abs(value) != float("inf")


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
        ylim: Fixed y range; default: matplotlib's, from 0.

    Returns:
        The written path.
    """
    plt = _pyplot()
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(categories) * max(len(series), 2) + 3), 4.8))
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(categories))]
        spread = (errors or {}).get(name) or [None] * len(values)
        kept = [(x, v, e or 0.0) for x, v, e in zip(xs, values, spread, strict=True) if _finite(v)]
        ax.bar(
            [x for x, _, _ in kept],
            [v for _, v, _ in kept],
            width,
            yerr=[e for _, _, e in kept] if errors else None,
            color=_color(i),
            label=_short(name),
            capsize=2,
            antialiased=False,
        )
    ax.set_xticks(range(len(categories)), [_short(c) for c in categories], rotation=45, ha="right")
    if ylim is not None:
        ax.set_ylim(*ylim)
    return _finish(plt, fig, ax, path, title=title, ylabel=ylabel)


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
    """Line chart with markers, one line per series over the shared ``xs`` (None, and with ``log_y`` values <= 0,
    leave gaps). Returns the path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.4 * len(xs) + 3), 4.8))
    for i, (name, values) in enumerate(series.items()):
        ys = [v if _finite(v) and (v > 0 or not log_y) else float("nan") for v in values]
        ax.plot(list(xs), ys, marker="o", markersize=7, color=_color(i), label=_short(name))
    if log_y:
        ax.set_yscale("log")
    ax.set_xticks(list(xs))
    return _finish(plt, fig, ax, path, title=title, xlabel=xlabel, ylabel=ylabel)


def _finish(plt, fig, ax, path: str | Path, *, title: str, xlabel: str = "", ylabel: str = "") -> Path:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------- layer scales

_BLOCK_KEY = re.compile(r"(?:^|\.)blocks\.(\d+)\.(.+)$")


def load_checkpoint(checkpoint: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict with a ``state_dict`` (a plain state dict is wrapped)."""
    from peftlab.checkpoint import safe_torch_load  # weights_only: a crafted pickle cannot run code

    payload = safe_torch_load(checkpoint)
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        return payload
    if isinstance(payload, dict) and all(torch.is_tensor(v) for v in payload.values()):
        return {"state_dict": payload}
    raise ValueError(f"{checkpoint}: expected a Lightning checkpoint with a 'state_dict', got {type(payload).__name__}")


def load_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint (or the dict itself when it is a plain state dict)."""
    return load_checkpoint(checkpoint)["state_dict"]


def layer_scale_magnitudes(
    state_dict: Mapping[str, torch.Tensor],
    group_by: str = "param",
    match: str | None = None,
    init: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, dict[int, float]]:
    """Mean ``|value − init|`` of the tensors under ``blocks.<i>.``, per parameter kind and block index.

    Args:
        state_dict: Tensors keyed like ``model.blocks.3.attn.qkv.parts.q.rlrr_scale_out``.
        group_by: ``param`` groups by the last name component (``rlrr_scale_out``), ``module`` by the whole path
            inside the block (``attn.qkv.parts.q.rlrr_scale_out``).
        match: Optional regex; only kinds it matches (``re.search``) are kept.
        init: The same tensors at initialisation; without it the mean ``|value|`` is returned.

    Returns:
        ``{kind: {block: mean over all elements of that kind in that block}}``, kinds sorted by name.
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
        start = init.get(key) if init is not None else None
        deviation = tensor.detach().double() - (start.detach().double() if start is not None else 0.0)
        total = totals.setdefault(kind, {}).setdefault(int(found[1]), [0.0, 0])
        total[0] += deviation.abs().sum().item()
        total[1] += tensor.numel()
    return {kind: {b: s / n for b, (s, n) in sorted(blocks.items())} for kind, blocks in sorted(totals.items())}


def initial_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The trainable tensors at initialisation, rebuilt from the run config stored in the checkpoint (the model is
    built seeded, so this is the training run's own init), keyed as in the checkpoint."""
    config = (checkpoint.get("peftlab") or {}).get("config")
    if not config:
        raise ValueError("the checkpoint holds no run config to rebuild the initial values from; pass --init")
    from omegaconf import OmegaConf

    from peftlab.build import build_method, build_model
    from peftlab.methods.state import trainable_state_dict
    from peftlab.module import PREFIX

    cfg = OmegaConf.create(config)
    model = build_model(cfg, build_method(cfg))
    return {PREFIX + k: v for k, v in trainable_state_dict(model).items()}


def run_title(checkpoint: Mapping[str, Any], path: str | Path) -> str:
    """``method · task · run`` from the checkpoint's run config (the run is its output directory)."""
    config = (checkpoint.get("peftlab") or {}).get("config") or {}
    method = str((config.get("method") or {}).get("_target_", "?")).rsplit(".", 1)[-1].removesuffix("Config")
    task = (config.get("data") or {}).get("task", "?")
    run = Path((config.get("paths") or {}).get("output_dir") or Path(path).resolve().parent.parent).name
    return f"{method} · {task} · {run}"


def plot_layer_scales(
    checkpoint: str | Path,
    out: str | Path,
    group_by: str = "param",
    match: str | None = None,
    log_y: bool = False,
    init: str | Path | None = None,
) -> dict[str, dict[int, float]]:
    """Plot mean ``|value − init|`` per layer and parameter kind from a checkpoint into ``out`` (PNG); returns the
    numbers. ``init``: a checkpoint with the initial values; default: rebuilt from the stored run config."""
    payload = load_checkpoint(checkpoint)
    start = load_state_dict(init) if init is not None else initial_state(payload)
    magnitudes = layer_scale_magnitudes(payload["state_dict"], group_by, match, start)
    if not magnitudes:
        raise ValueError(f"{checkpoint}: no floating-point tensors under 'blocks.<i>.' (match={match!r})")
    blocks = sorted({b for per_block in magnitudes.values() for b in per_block})
    series = {kind: [per_block.get(b) for b in blocks] for kind, per_block in magnitudes.items()}
    title = f"Change from init per layer: {run_title(payload, checkpoint)}"
    line_chart(blocks, series, out, title=title, xlabel="block", ylabel="mean |value − init|", log_y=log_y)
    return magnitudes


def _format_magnitudes(magnitudes: dict[str, dict[int, float]]) -> str:
    blocks = sorted({b for per_block in magnitudes.values() for b in per_block})
    lines = ["kind".ljust(40) + "".join(f"{b:>9d}" for b in blocks)]
    for kind, per_block in magnitudes.items():
        cells = "".join(f"{per_block[b]:9.4f}" if b in per_block else " " * 9 for b in blocks)
        lines.append(kind[:40].ljust(40) + cells)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peftlab-plots", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scales = commands.add_parser("layer-scales", help="per-layer change from init of the trainable tensors")
    scales.add_argument("checkpoint", type=Path)
    scales.add_argument("--out", type=Path, required=True, help="PNG file to write")
    scales.add_argument("--group-by", choices=("param", "module"), default="param")
    scales.add_argument("--match", help="regex on the parameter kind, e.g. 'scale|hta_diag'")
    scales.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    scales.add_argument("--init", type=Path, help="checkpoint with the initial values (default: rebuilt from config)")
    args = parser.parse_args(argv)
    try:
        magnitudes = plot_layer_scales(args.checkpoint, args.out, args.group_by, args.match, args.log_y, args.init)
    except (OSError, ValueError, RuntimeError, KeyError, ModuleNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    print(_format_magnitudes(magnitudes))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
