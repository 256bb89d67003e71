"""The dense index on the GPU, by construction on the CPU: a fake placement stands in for
faiss.index_cpu_to_gpu (it clones the index on the host), so the paths that choose, build,
refresh and fall back from the GPU copy run here with the same ids and results to compare."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pytest

from rag.index.dense import KBIndex, faiss_gpu


class FakeGpu:
    """faiss.clone_index in place of index_cpu_to_gpu; counts copies and searches."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.copies: list[Any] = []
        self.searches = 0

    def to_gpu(self, index: faiss.Index) -> faiss.Index:
        if self.fail:
            raise RuntimeError("out of GPU memory")
        copy = faiss.clone_index(index)
        self.copies.append(copy)
        return copy

    def search(self, index: faiss.Index, query: np.ndarray, k: int) -> tuple[Any, Any]:
        assert index is self.copies[-1], "searched a stale copy"
        self.searches += 1
        return index.search(query, k)


def _vectors(n: int, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = rng.choice(10**9, size=n, replace=False).astype(np.int64)  # sparse, like SQL ids
    return ids, vectors


def _pair(layout: str, n: int = 2000) -> tuple[KBIndex, KBIndex, FakeGpu, np.ndarray]:
    ids, vectors = _vectors(n)
    cpu = KBIndex("kb", "fake:32", 32)
    cpu.add(ids, vectors)
    if layout == "ivf":
        cpu = cpu.with_layout("ivf", ids, vectors)
        cpu.nprobe = 8
    gpu = FakeGpu()
    on_gpu = KBIndex("kb", "fake:32", 32).with_layout(layout, ids, vectors)  # type: ignore[arg-type]
    on_gpu.nprobe = cpu.nprobe
    on_gpu.gpu = gpu
    return cpu, on_gpu, gpu, vectors


@pytest.mark.parametrize("layout", ["flat", "ivf"])
def test_gpu_copy_gives_the_same_ids_and_scores(layout: str) -> None:
    cpu, on_gpu, gpu, vectors = _pair(layout)
    for query in vectors[:20] + 0.01:
        want, got = cpu.search(query, 10), on_gpu.search(query, 10)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert len(gpu.copies) == 1 and gpu.searches == 20  # one copy, reused
    if layout == "ivf":
        assert gpu.copies[0].nprobe == 8  # the copy probes as many lists as the host index


def test_a_change_makes_a_fresh_copy_before_the_next_search() -> None:
    _, on_gpu, gpu, vectors = _pair("flat", 200)
    new_ids, new_vectors = np.array([7, 8], dtype=np.int64), vectors[:2] * -1
    on_gpu.search(vectors[0], 5)
    on_gpu.add(new_ids, new_vectors)
    hits = on_gpu.search(new_vectors[0], 1)
    assert hits[0][0] == 7 and len(gpu.copies) == 2
    on_gpu.remove([7])
    assert on_gpu.search(new_vectors[0], 1)[0][0] != 7 and len(gpu.copies) == 3


def test_filtered_searches_stay_on_the_host() -> None:
    cpu, on_gpu, gpu, vectors = _pair("flat", 500)
    allowed = cpu.ids()[:50]
    assert on_gpu.search(vectors[3], 5, allowed) == cpu.search(vectors[3], 5, allowed)
    assert gpu.searches == 0


def test_a_failed_copy_leaves_the_index_on_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    cpu, on_gpu, _, vectors = _pair("flat", 300)
    on_gpu.gpu = FakeGpu(fail=True)
    assert on_gpu.search(vectors[1], 5) == cpu.search(vectors[1], 5)
    assert on_gpu.gpu is None and "stays on the CPU" in caplog.text


def test_a_layout_switch_keeps_the_placement() -> None:
    _, on_gpu, gpu, _ = _pair("flat", 300)
    ids, vecs = on_gpu.vectors()
    assert on_gpu.with_layout("ivf", ids, vecs).gpu is gpu


def test_the_cpu_build_turns_the_setting_off_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert faiss_gpu(False) is None
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("this FAISS build sees a GPU: the CPU-only path does not apply")
    assert faiss_gpu(True) is None and "stays on the CPU" in caplog.text


def test_the_store_hands_its_placement_to_every_index(tmp_path: Any) -> None:
    from rag.index.store import IndexStore
    from rag.store.db import Database

    gpu = FakeGpu()
    store = IndexStore(tmp_path, Database(f"sqlite:///{tmp_path / 'x.db'}"), gpu=gpu)
    version = type("V", (), {"kb_id": "kb", "embedding_model": "fake:32", "embedding_dim": 32})
    index = store._new_dense("kb", version)  # type: ignore[arg-type]
    assert isinstance(index, KBIndex) and index.gpu is gpu
