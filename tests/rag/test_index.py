"""The FAISS cache: ids are chunk ids, snapshots are atomic and checked, SQL wins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag.core.errors import IndexUnusable
from rag.index.dense import MANIFEST, KBIndex


def _unit(rows: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_ids_are_chunk_ids_and_survive_removal() -> None:
    index = KBIndex("kb", "m", 8)
    vectors = _unit(5)
    index.add(np.array([10, 20, 30, 40, 50]), vectors)
    index.remove([20, 40])
    assert sorted(index.ids().tolist()) == [10, 30, 50]
    # The vector of 50 is still found as 50: removal did not shift positions.
    assert index.search(vectors[4], 1)[0][0] == 50
    assert index.search(vectors[2], 1)[0][0] == 30


def test_add_is_idempotent_by_id() -> None:
    index = KBIndex("kb", "m", 8)
    vectors = _unit(3)
    index.add(np.array([1, 2, 3]), vectors)
    index.add(np.array([1, 2, 3]), vectors)
    assert len(index) == 3


def test_wrong_dimension_is_refused() -> None:
    with pytest.raises(IndexUnusable):
        KBIndex("kb", "m", 8).add(np.array([1]), _unit(1, dim=4))


def test_snapshot_round_trip_and_checks(tmp_path: Path) -> None:
    index = KBIndex("kb", "m", 8)
    index.add(np.array([7, 9]), _unit(2))
    index.last_seq = 42
    manifest = index.save(tmp_path)
    assert manifest.last_seq == 42 and manifest.count == 2
    assert not list(tmp_path.glob(".*.tmp"))
    loaded = KBIndex.load(tmp_path, kb_id="kb", embedding_model="m", dim=8)
    assert sorted(loaded.ids().tolist()) == [7, 9] and loaded.last_seq == 42

    with pytest.raises(IndexUnusable, match="built with"):
        KBIndex.load(tmp_path, kb_id="kb", embedding_model="other", dim=8)
    data_file = tmp_path / manifest.index_file
    data_file.write_bytes(data_file.read_bytes()[:-10])
    with pytest.raises(IndexUnusable, match="checksum"):
        KBIndex.load(tmp_path, kb_id="kb", embedding_model="m", dim=8)
    (tmp_path / MANIFEST).write_text("{broken")
    with pytest.raises(IndexUnusable, match="unreadable"):
        KBIndex.load(tmp_path, kb_id="kb", embedding_model="m", dim=8)


def test_new_snapshot_replaces_old_file_only_after_manifest(tmp_path: Path) -> None:
    index = KBIndex("kb", "m", 8)
    index.add(np.array([1]), _unit(1))
    first = index.save(tmp_path)
    index.add(np.array([2]), _unit(1, seed=1))
    index.last_seq = 2
    second = index.save(tmp_path)
    assert json.loads((tmp_path / MANIFEST).read_text())["index_file"] == second.index_file
    assert not (tmp_path / first.index_file).exists()
    assert [p.name for p in tmp_path.glob("vectors-*")] == [second.index_file]
