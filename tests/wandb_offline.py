"""Reading an offline W&B run back: wandb >= 0.2x keeps offline runs only in ``run-<id>.wandb`` (a LevelDB-style
log of protobuf records: 32 KiB blocks, 7-byte record headers, full/first/middle/last fragments)."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(data: bytes) -> Iterator[bytes]:
    pos, pending = HEADER, b""  # the file starts with a 7-byte ':W&B' header
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        chunk, pos = data[pos + HEADER : pos + HEADER + length], pos + HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def read_offline_run(run_dir: Path, wait_s: float = 60.0) -> dict[str, Any]:
    """``{"name", "group", "job_type", "tags", "config": {key: value}, "summary": {key: value}}`` of a run dir,
    once its ``exit`` record is written (wandb's writer process may still be flushing after ``wandb.finish``)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = parse(run_dir)
        if out["exited"] or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def parse(run_dir: Path) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    out: dict[str, Any] = {"config": {}, "summary": {}, "exited": False}
    for raw in raw_records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(name=run.display_name, group=run.run_group, job_type=run.job_type, tags=list(run.tags))
            out["config"].update({item.key: json.loads(item.value_json) for item in run.config.update})
        elif kind == "config":
            out["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "exit":
            out["exited"] = True
        elif kind == "summary":
            out["summary"].update({item.key: json.loads(item.value_json) for item in record.summary.update if item.key})
    return out
