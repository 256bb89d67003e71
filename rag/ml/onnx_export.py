"""Export a local cross-encoder folder to ONNX once, with an int8 copy, cached by content hash.

`onnx_files(folder, cache_dir)` returns the fp32 and int8 ONNX files of a transformers sequence
classifier (any sentence-transformers CrossEncoder folder), exporting them on first use with
torch.onnx (the torch.export-based exporter) and onnxruntime's dynamic int8 quantisation. The
cache entry is named by a hash of the folder's files, so an edited model is exported again; it
is built in a temporary folder and renamed into place, so an entry that exists is complete,
also when several processes export at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FP32 = "model.onnx"
INT8 = "model-int8.onnx"
# protobuf's size limit: larger models keep their weights in a side file.
_PROTOBUF_LIMIT = 1_800_000_000
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class OnnxFiles:
    fp32: Path
    int8: Path


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (hidden files and folders left out)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_dir() or any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(str(rel).encode() + b"\0")
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def onnx_files(folder: Path, cache_dir: Path) -> OnnxFiles:
    """The cached ONNX export of `folder`, made now if missing. Raises what the export raises."""
    entry = cache_dir / folder_digest(folder)[:24]
    with _lock_for(entry):
        if not (entry / INT8).is_file():
            _build(folder, entry)
    return OnnxFiles(entry / FP32, entry / INT8)


def _lock_for(entry: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(entry, threading.Lock())


def _build(folder: Path, entry: Path) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        log.info("exporting the reranker %s to ONNX (once; cached in %s)", folder, entry)
        export_fp32(folder, staging / FP32)
        quantize_int8(staging / FP32, staging / INT8)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the entry from other service users
        try:
            staging.rename(entry)
        except OSError:
            if not (entry / INT8).is_file():  # not another process's finished entry
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_fp32(folder: Path, out: Path) -> None:
    """torch → ONNX with dynamic batch and sequence axes, checked against torch on a sample."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    # A throwaway instance: tracing leaves state behind in the module it traced.
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    names = list(tokenizer.model_input_names)
    sample = tokenizer(
        ["年假有几天", "how many days of leave"],
        ["员工每年享有十天带薪年假，入职满一年后开始计算。", "ten days"],
        padding=True,
        return_tensors="pt",
    )
    inputs = {name: sample[name] for name in names}

    class Logits(torch.nn.Module):
        """The classifier's logits alone, for the inputs its tokenizer makes."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    if not set(names) <= {"input_ids", "attention_mask", "token_type_ids"}:
        raise ValueError(f"unsupported tokenizer inputs {names}")
    wrapper = Logits().eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > _PROTOBUF_LIMIT
    with torch.inference_mode():
        expected = wrapper(**inputs).numpy()
    chatter = io.StringIO()  # the exporter prints its progress; the service's stdout stays clean
    with contextlib.redirect_stdout(chatter):
        torch.onnx.export(
            wrapper,
            (),
            str(out),
            kwargs=inputs,
            dynamo=True,
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: seq} for name in names},
            external_data=big,
            verbose=False,
        )
    log.debug("%s", chatter.getvalue())
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: sample[n].numpy().astype(np.int64) for n in names})[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-3, rtol=1e-3):
        raise RuntimeError("the ONNX export does not reproduce the torch model's scores")


def quantize_int8(fp32: Path, out: Path) -> None:
    """Dynamic quantisation: int8 weights, activations quantised per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    big = fp32.stat().st_size > _PROTOBUF_LIMIT or fp32.with_name(fp32.name + ".data").exists()
    quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, use_external_data_format=big)
