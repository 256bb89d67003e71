"""Dense index layouts: exact flat, and IVF above the configured size, both keyed by chunk id."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ingest.upload import stage_upload
from rag.index.dense import KBIndex
from rag.services import Services
from tests.conftest import make_settings


def _unit(rows: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_ivf_keeps_ids_removal_filters_and_snapshots(tmp_path: Path) -> None:
    vectors = _unit(2000)
    ids = np.arange(1000, 3000, dtype=np.int64)
    flat = KBIndex("kb", "m", 16)
    flat.add(ids, vectors)
    ivf = flat.with_layout("ivf", *flat.vectors())
    assert ivf.layout == "ivf" and len(ivf) == 2000
    assert sorted(ivf.ids().tolist()) == ids.tolist()
    ivf.nprobe = 10_000  # every list: exact, comparable with flat
    for q in vectors[:20]:
        assert [i for i, _ in ivf.search(q, 10)] == [i for i, _ in flat.search(q, 10)]
    ivf.remove(ids[:10])
    assert ivf.search(vectors[0], 1)[0][0] != 1000
    allowed = np.array([2500, 2600, 2700], dtype=np.int64)
    ivf.nprobe = 1  # a filter widens the probe by the allowed share: still finds all three
    assert sorted(i for i, _ in ivf.search(vectors[5], 10, allowed)) == allowed.tolist()
    ivf.last_seq = 7
    ivf.save(tmp_path)
    loaded = KBIndex.load(tmp_path, kb_id="kb", embedding_model="m", dim=16)
    assert loaded.layout == "ivf" and len(loaded) == 1990 and loaded.last_seq == 7
    assert loaded.search(vectors[1500], 1)[0][0] == 2500


def test_store_switches_to_ivf_above_the_threshold_and_back(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", retrieval={"ann_threshold": 40, "ivf_nprobe": 64})
    svc = Services.create(settings)
    try:
        kb = svc.knowledge.create_kb("big").id
        text = "\n\n".join(f"第{i}节\n\n这是第{i}节的内容，编号{i}。" for i in range(120))
        path = tmp_path / "big.txt"
        path.write_text(text, encoding="utf-8")
        with path.open("rb") as fh:
            doc, _ = svc.knowledge.add_document(
                kb, stage_upload(fh, "big.txt", svc.settings.data_dir, 10**8)
            )
        svc.indexes.get(kb)  # loaded now, so the worker's sync keeps it up to date
        worker = svc.worker()
        while worker.run_once():
            pass
        index = svc.indexes.get(kb)
        assert len(index) > 40 and index.layout == "ivf"
        assert svc.retriever.search(kb, "第7节的内容", 3, mode="dense")
        assert svc.indexes.check(kb)["consistent"]
        svc.knowledge.delete_document(kb, doc.id)
        svc.indexes.sync(kb)  # below half the threshold: back to exact
        assert svc.indexes.get(kb).layout == "flat" and len(svc.indexes.get(kb)) == 0
    finally:
        svc.close()
