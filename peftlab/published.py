"""Published per-task results of ViT-B/16 PEFT methods on VTAB-1k and FGVC, as data with their sources.

Every row cites the paper and table it was copied from and carries a source tag (see ``docs/methods.md``):
``V`` checked against the primary paper, ``S`` only from a secondary summary (AOFT). Accuracies are percentages as
printed; ``means`` are the printed group means and the printed "Mean" (the 19-task mean on VTAB-1k, not the mean of
the group means); ``params_m`` is the printed "Params (M)", which includes the task-averaged head for RLRR, HTA and
linear probing, while baseline rows copied from earlier papers use mixed conventions.

Keys of ``method`` are peftlab method names (``full``, ``linear``, ``bitfit``, ``vpt_shallow``, ``vpt_deep``,
``adapter``, ``lora``, ``adaptformer``, ``fact_tk``, ``arc``, ``ssf``, ``rlrr``, ``hta``, ``aoft``, ``aoft_adapter``,
``vpt_deep_aoft``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peftlab.data.catalog import FGVC_TASKS, VTAB_TASKS

PAPERS = {
    "RLRR-P": "Dong et al., Low-Rank Rescaled Vision Transformer Fine-Tuning: A Residual Design Approach, "
    "CVPR 2024 (arXiv 2403.19067)",
    "HTA-P": "Dong et al., Efficient Adaptation of Pre-trained Vision Transformer via Householder Transformation, "
    "NeurIPS 2024 (arXiv 2410.22952)",
    "AOFT-S": "secondary summaries (papernotes, alphaXiv) of Yang et al., Efficient Adaptation of Pre-trained Vision "
    "Transformer underpinned by Approximately Orthogonal Fine-Tuning Strategy, ICCV 2025 (arXiv 2507.13260)",
}

ORIG_IN21K = "vit_base_patch16_224.orig_in21k"
AUGREG_IN21K = "vit_base_patch16_224.augreg_in21k"

VTAB_GROUPS = ("natural", "specialized", "structured")


@dataclass(frozen=True)
class PublishedRow:
    """One row of a published results table.

    Attributes:
        key: Unique id, ``<benchmark>/<short name>``.
        method: peftlab method name the row compares with.
        label: Row name as in the paper ("*" marks the AugReg backbone, except for AOFT where it marks λ scaling).
        benchmark: ``vtab1k`` or ``fgvc``.
        timm_name: timm tag of the backbone the row was trained from.
        source: Paper id (a key of ``PAPERS``) and table.
        tag: ``V`` (checked against the paper) or ``S`` (secondary summary only).
        tasks: Per-task accuracy in percent, keyed by canonical task name; empty when only means were published.
        means: Printed means in percent: ``natural``/``specialized``/``structured``/``mean`` (VTAB) or ``mean``.
        params_m: Printed trainable parameters in millions, or None when not published.
        ablation: True for ablation rows (not shown next to runs by default).
        note: Anything a reader must know about the row.
    """

    key: str
    method: str
    label: str
    benchmark: str
    timm_name: str
    source: str
    tag: str
    tasks: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    params_m: float | None = None
    ablation: bool = False
    note: str = ""


def _numbers(text: str) -> list[float]:
    return [float(token) for token in text.replace("|", " ").split()]


def _vtab(key, method, label, scores, means, params, source, timm_name=ORIG_IN21K, tag="V", **extra) -> PublishedRow:
    """A VTAB-1k row from the paper's layout: "7 natural | 4 specialized | 8 structured" and "N S St Mean"."""
    values = _numbers(scores)
    tasks = dict(zip(VTAB_TASKS, values, strict=True)) if values else {}
    means_named = dict(zip((*VTAB_GROUPS, "mean"), _numbers(means), strict=True)) if means else {}
    return PublishedRow(f"vtab1k/{key}", method, label, "vtab1k", timm_name, source, tag, tasks, means_named, params,
                        **extra)  # fmt: skip


def _fgvc(key, method, label, scores, mean, params, source, timm_name=ORIG_IN21K, tag="V", **extra) -> PublishedRow:
    """An FGVC row in the paper's column order: CUB, NABirds, Flowers, Dogs, Cars."""
    tasks = dict(zip(FGVC_TASKS, _numbers(scores), strict=True))
    return PublishedRow(f"fgvc/{key}", method, label, "fgvc", timm_name, source, tag, tasks, {"mean": mean}, params,
                        **extra)  # fmt: skip


_T1 = "HTA-P Table 1 (= RLRR-P Table 2)"
_RLRR_T2 = "RLRR-P Table 2 (= HTA-P Table 1)"
_HTA_T1 = "HTA-P Table 1"
_HTA_ABL = "HTA-P Fig. 2 / supplement Table 7 (LoRA-term rank D')"
_AOFT_VTAB = "AOFT-S (papernotes), VTAB-1k group means"
_AOFT_FGVC = "AOFT-S (papernotes), FGVC main results"
_T2 = "HTA-P Table 2 (= RLRR-P Table 3)"
_AUGREG = "AugReg ImageNet-21k backbone"
_AOFT_STAR = "'*' here is AOFT's learnable per-rank scaling λ, not the AugReg backbone"

# fmt: off
VTAB_ROWS: tuple[PublishedRow, ...] = (
    _vtab("full", "full", "Full fine-tuning",
          "68.9 87.7 64.3 97.2 86.9 87.4 38.8 | 79.7 95.7 84.2 73.9 | 56.3 58.6 41.7 65.5 57.5 46.7 25.7 29.1",
          "75.9 83.4 47.6 65.6", 85.80, _T1),
    _vtab("linear", "linear", "Linear probing",
          "63.4 85.0 63.2 97.0 86.3 36.6 51.0 | 78.5 87.5 68.6 74.0 | 34.3 30.6 33.2 55.4 12.5 20.0 9.6 19.2",
          "68.9 77.2 26.9 52.9", 0.04, _T1),
    _vtab("bitfit", "bitfit", "Bias (BitFit)",
          "72.8 87.0 59.2 97.5 85.3 59.9 51.4 | 78.7 91.6 72.9 69.8 | 61.5 55.6 32.4 55.9 66.6 40.0 15.7 25.1",
          "73.3 78.3 44.1 62.1", 0.14, _T1, note="19-task mean of the printed tasks is 62.05, printed 62.1"),
    _vtab("vpt_shallow", "vpt_shallow", "VPT-Shallow",
          "77.7 86.9 62.6 97.5 87.3 74.5 51.2 | 78.2 92.0 75.6 72.9 | 50.5 58.6 40.5 67.1 68.7 36.1 20.2 34.1",
          "76.8 79.7 47.0 64.9", 0.11, _T1),
    _vtab("vpt_deep", "vpt_deep", "VPT-Deep",
          "78.8 90.8 65.8 98.0 88.3 78.1 49.6 | 81.8 96.1 83.4 68.4 | 68.5 60.0 46.5 72.8 73.6 47.9 32.9 37.8",
          "78.5 82.4 55.0 69.4", 0.60, _T1),
    _vtab("adapter", "adapter", "Adapter (FacT-paper version)",
          "69.2 90.1 68.0 98.8 89.9 82.8 54.3 | 84.0 94.9 81.9 75.5 | 80.9 65.3 48.6 78.3 74.8 48.5 29.9 41.6",
          "79.0 84.1 58.5 71.4", 0.16, _HTA_T1, note="RLRR-P Table 2 prints the VPT-paper Adapter instead"),
    _vtab("adapter_vpt", "adapter", "Adapter (VPT-paper version)",
          "74.1 86.1 63.2 97.7 87.0 34.6 50.8 | 76.3 88.0 73.1 70.5 | 45.7 37.4 31.2 53.2 30.3 25.4 13.8 22.1",
          "70.5 77.0 32.4 55.8", 0.27, "RLRR-P Table 2"),
    _vtab("lora", "lora", "LoRA",
          "67.1 91.4 69.4 98.8 90.4 85.3 54.0 | 84.9 95.3 84.4 73.6 | 82.9 69.2 49.8 78.5 75.7 47.1 31.0 44.0",
          "79.5 84.6 59.8 72.3", 0.29, _T1, note="params without head"),
    _vtab("adaptformer", "adaptformer", "AdaptFormer",
          "70.8 91.2 70.5 99.1 90.9 86.6 54.8 | 83.0 95.8 84.4 76.3 | 81.9 64.3 49.3 80.3 76.3 45.7 31.7 41.1",
          "80.6 84.9 58.8 72.3", 0.16, _T1),
    _vtab("fact_tk", "fact_tk", "FacT-TK≤32",
          "70.6 90.6 70.8 99.1 90.7 88.6 54.1 | 84.8 96.2 84.5 75.7 | 82.6 68.2 49.8 80.7 80.8 47.4 33.2 43.0",
          "80.6 85.3 60.7 73.2", 0.07, _T1),
    _vtab("arc", "arc", "ARC",
          "72.2 90.1 72.7 99.0 91.0 91.9 54.4 | 84.9 95.7 86.7 75.8 | 80.7 67.1 48.7 81.6 79.2 51.0 31.4 39.9",
          "81.6 85.8 60.0 73.4", 0.13, _T1),
    _vtab("rlrr", "rlrr", "RLRR",
          "75.6 92.4 72.9 99.3 91.5 89.8 57.0 | 86.8 95.2 85.3 75.9 | 79.7 64.2 53.9 82.1 83.9 53.7 33.4 43.6",
          "82.7 85.8 61.8 74.5", 0.33, _RLRR_T2, note="natural mean of the printed tasks is 82.64, printed 82.7"),
    _vtab("ssf", "ssf", "SSF", "69.0 92.6 75.1 99.4 91.8 90.2 52.9 | 87.4 95.9 87.4 75.5 | "
          "75.9 62.3 53.3 80.6 77.3 54.9 29.5 37.9",
          "81.6 86.6 59.0 73.1", 0.24, _T1, AUGREG_IN21K, note=_AUGREG),
    _vtab("arc_augreg", "arc", "ARC*",
          "71.2 90.9 75.9 99.5 92.1 90.8 52.0 | 87.4 96.5 87.6 76.4 | 83.3 61.1 54.6 81.7 81.0 57.0 30.9 41.3",
          "81.8 87.0 61.4 74.3", 0.13, _T1, AUGREG_IN21K, note=_AUGREG),
    _vtab("rlrr_augreg", "rlrr", "RLRR*",
          "76.7 92.7 76.3 99.6 92.6 91.8 56.0 | 87.8 96.2 89.1 76.3 | 80.4 63.3 54.5 83.3 83.0 53.7 32.0 41.7",
          "83.7 87.3 61.5 75.1", 0.33, _RLRR_T2, AUGREG_IN21K,
          note=f"{_AUGREG}; specialized mean of the printed tasks is 87.35, printed 87.3"),
    _vtab("hta", "hta", "HTA",
          "76.6 94.3 72.5 99.3 91.3 86.2 56.5 | 87.6 95.7 85.0 75.7 | 82.6 63.3 52.5 81.0 84.5 52.6 34.5 47.3",
          "82.4 86.0 62.3 74.7", 0.22, _HTA_T1, note="LoRA-term rank D' = 1"),
    _vtab("hta_augreg", "hta", "HTA*",
          "79.0 92.8 77.6 99.6 92.4 89.4 55.1 | 88.2 96.1 89.7 76.4 | 84.2 61.7 53.6 82.0 85.1 53.7 33.9 47.9",
          "83.7 87.6 62.8 75.7", 0.22, _HTA_T1, AUGREG_IN21K, note=_AUGREG),
    _vtab("hta_rank0", "hta", "HTA (D'=0)",
          "73.0 90.1 71.8 99.3 91.1 83.4 53.7 | 82.3 94.2 82.7 73.7 | 77.3 61.6 49.2 80.0 81.7 53.3 28.1 41.2",
          "80.3 83.2 59.1 72.0", 0.15, _HTA_ABL, ablation=True),
    _vtab("hta_rank2", "hta", "HTA (D'=2)",
          "75.5 94.2 73.0 99.3 91.2 85.7 56.3 | 88.0 95.2 84.6 76.1 | 82.2 63.1 52.1 80.2 85.5 52.3 33.9 47.5",
          "82.2 86.0 62.1 74.5", 0.30, _HTA_ABL, ablation=True),
    _vtab("hta_rank4", "hta", "HTA (D'=4)",
          "74.6 93.6 72.1 99.3 91.4 88.3 56.1 | 88.0 96.3 85.6 76.4 | 81.8 64.9 53.6 82.3 84.8 53.6 34.4 47.2",
          "82.2 86.6 62.8 75.0", 0.44, _HTA_ABL, ablation=True),
    _vtab("aoft_adapter", "aoft_adapter", "Adapter+AOFT", "", "79.3 84.2 60.6 72.5", 0.06, _AOFT_VTAB, tag="S"),
    _vtab("aoft_adapter_lambda", "aoft_adapter", "Adapter+AOFT*", "", "81.4 83.9 59.4 72.7", 0.06, _AOFT_VTAB,
          tag="S", note=_AOFT_STAR),
    _vtab("aoft_vpt_deep", "vpt_deep_aoft", "VPT-Deep+AOFT", "", "80.3 84.7 55.4 70.7", 0.05, _AOFT_VTAB, tag="S"),
    PublishedRow("vtab1k/aoft_lambda", "aoft", "LoRA+AOFT†", "vtab1k", ORIG_IN21K, "AOFT-S (alphaXiv overview)", "S",
                 means={"mean": 74.1}, note="only the 19-task mean was given; '†' is the λ-scaled variant"),
)

FGVC_ROWS: tuple[PublishedRow, ...] = (
    _fgvc("full", "full", "Full FT", "87.3 82.7 98.8 89.4 84.5", 88.5, 85.98, _T2),
    _fgvc("linear", "linear", "Linear", "85.3 75.9 97.9 86.2 51.3", 79.3, 0.18, _T2),
    _fgvc("adapter", "adapter", "Adapter", "87.1 84.3 98.5 89.8 68.6", 85.7, 0.41, _T2),
    _fgvc("bitfit", "bitfit", "Bias", "88.4 84.2 98.8 91.2 79.4", 88.4, 0.28, _T2),
    _fgvc("vpt_shallow", "vpt_shallow", "VPT-Shallow", "86.7 78.8 98.4 90.7 68.7", 84.6, 0.25, _T2,
          note="mean of the printed tasks is 84.66, printed 84.6"),
    _fgvc("vpt_deep", "vpt_deep", "VPT-Deep", "88.5 84.2 99.0 90.2 83.6", 89.1, 0.85, _T2),
    _fgvc("lora", "lora", "LoRA", "88.3 85.6 99.2 91.0 83.2", 89.5, 0.44, _T2),
    _fgvc("arc", "arc", "ARC", "88.5 85.3 99.3 91.9 85.7", 90.1, 0.25, _T2),
    _fgvc("rlrr", "rlrr", "RLRR", "89.3 84.7 99.5 92.0 87.0", 90.4, 0.47, "RLRR-P Table 3 (= HTA-P Table 2)",
          note="mean of the printed tasks is 90.50, printed 90.4"),
    _fgvc("ssf", "ssf", "SSF", "89.5 85.7 99.6 89.6 89.2", 90.7, 0.39, _T2, AUGREG_IN21K, note=_AUGREG),
    _fgvc("arc_augreg", "arc", "ARC*", "89.3 85.7 99.7 89.1 89.5", 90.7, 0.25, _T2, AUGREG_IN21K, note=_AUGREG),
    _fgvc("rlrr_augreg", "rlrr", "RLRR*", "89.8 85.3 99.6 90.0 90.4", 91.0, 0.47, "RLRR-P Table 3 (= HTA-P Table 2)",
          AUGREG_IN21K, note=_AUGREG),
    _fgvc("hta", "hta", "HTA", "88.8 84.4 99.5 92.2 87.9", 90.6, 0.36, "HTA-P Table 2"),
    _fgvc("hta_augreg", "hta", "HTA*", "90.5 85.4 99.6 89.3 90.5", 91.1, 0.36, "HTA-P Table 2", AUGREG_IN21K,
          note=_AUGREG),
    _fgvc("aoft", "aoft", "LoRA+AOFT", "88.8 84.2 99.4 92.0 85.1", 89.9, 0.22, _AOFT_FGVC, tag="S"),
    _fgvc("aoft_adapter_lambda", "aoft_adapter", "Adapter+AOFT*", "89.0 84.5 99.5 92.0 85.2", 90.1, 0.20, _AOFT_FGVC,
          tag="S", note=f"{_AOFT_STAR}; mean of the printed tasks is 90.04, printed 90.1"),
    _fgvc("aoft_vpt_deep", "vpt_deep_aoft", "VPT-Deep+AOFT", "88.7 82.8 99.5 91.5 84.1", 89.5, 0.15, _AOFT_FGVC,
          tag="S", note="mean of the printed tasks is 89.32, printed 89.5 (more than rounding: check the paper)"),
)
# fmt: on

ROWS: dict[str, PublishedRow] = {row.key: row for row in (*VTAB_ROWS, *FGVC_ROWS)}


def rows_for(benchmark: str, method: str | None = None, *, ablations: bool = False) -> list[PublishedRow]:
    """Published rows of a benchmark, optionally of one method, in the papers' order (ablations only on request)."""
    return [
        row
        for row in ROWS.values()
        if row.benchmark == benchmark and (method is None or row.method == method) and (ablations or not row.ablation)
    ]


def same_architecture(timm_a: str | None, timm_b: str | None) -> bool:
    """Whether two timm names share the architecture (``vit_base_patch16_224``), whatever the pretrained tag."""
    return timm_a is not None and timm_b is not None and timm_a.split(".")[0] == timm_b.split(".")[0]


def reference_row(benchmark: str, method: str, timm_name: str | None) -> PublishedRow | None:
    """The row a run is compared with: the method's first main row on exactly the same backbone, else None."""
    return next((row for row in rows_for(benchmark, method) if row.timm_name == timm_name), None)
