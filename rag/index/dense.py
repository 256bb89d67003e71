"""One knowledge base's FAISS index, keyed by SQL chunk id, and its atomic on-disk snapshot.

Every layout is keyed by the SQL chunk id (never by position, so removing a document never
shifts anyone else's vectors): exact flat search, or IVF for large knowledge bases (`KBIndex`).
Vectors are L2-normalised, so inner product is cosine similarity. A search restricted to
allowed chunk ids (filters) applies the IDSelector inside the scan, so top-k is the top-k of
the allowed set. With a GPU placement (`FaissGpu`), unfiltered searches run on a GPU copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, cast

import faiss
import numpy as np

from rag.core.errors import IndexUnusable

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
Layout = Literal["flat", "ivf"]
# A flat scan over more floats than this uses FAISS's OpenMP threads (about 200k x 512-d).
_PARALLEL_SCAN_FLOATS = 100_000_000


@dataclass(frozen=True)
class Manifest:
    format_version: int
    kb_id: str
    embedding_model: str
    dim: int
    last_seq: int
    count: int
    index_file: str
    sha256: str


class GpuPlacement(Protocol):
    """Where dense searches run on a GPU: `FaissGpu`, or a fake in tests."""

    def to_gpu(self, index: faiss.Index) -> faiss.Index: ...

    def search(self, index: faiss.Index, query: np.ndarray, k: int) -> tuple[Any, Any]: ...


class FaissGpu:
    """faiss.index_cpu_to_gpu onto one device. The clone keeps the ids (IndexIDMap2 stays on
    the host around a GpuIndexFlat; IVF lists keep theirs). One StandardGpuResources serves
    every index of the process; it is not thread-safe, hence the lock around searches."""

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self._resources = cast(Any, faiss).StandardGpuResources()
        self._lock = threading.Lock()

    def to_gpu(self, index: faiss.Index) -> faiss.Index:
        with self._lock:
            return cast(Any, faiss).index_cpu_to_gpu(self._resources, self.device, index)

    def search(self, index: faiss.Index, query: np.ndarray, k: int) -> tuple[Any, Any]:
        with self._lock:
            return index.search(query, k)


def faiss_gpu(enabled: bool, device: int = 0) -> FaissGpu | None:
    """A FaissGpu where RAG_RETRIEVAL__FAISS_GPU asks for one and this FAISS build sees the
    device; None (CPU search, with a warning when asked for) otherwise."""
    if not enabled:
        return None
    gpus = int(cast(Any, faiss).get_num_gpus()) if hasattr(faiss, "StandardGpuResources") else 0
    if gpus <= device:
        log.warning(
            "RAG_RETRIEVAL__FAISS_GPU is on but FAISS sees %d GPU(s) (a CPU build? see "
            "docs/deployment.md): dense search stays on the CPU",
            gpus,
        )
        return None
    return FaissGpu(device)


def ivf_lists(n: int) -> int:
    """Inverted lists for n vectors: about 4 sqrt(n), the usual FAISS guideline."""
    return int(min(65536, max(16, 4 * math.sqrt(n))))


class KBIndex:
    """A FAISS index in one of two layouts, both keyed by the SQL chunk id:

    * flat: IndexIDMap2 over an exact inner-product index, for up to a few hundred thousand
      vectors;
    * ivf: IndexIVFFlat with a hash-table direct map (ids, removal, reconstruction by id), for
      large knowledge bases; the IndexStore switches a flat index to IVF above a size chosen by
      measurement (bench/dense_ann.py), training the coarse quantizer on the knowledge base's
      own vectors (`with_layout`).

    A filtered search's top-k is exact on flat; on IVF more lists are probed the smaller the
    allowed share (`_params`).
    """

    def __init__(self, kb_id: str, embedding_model: str, dim: int) -> None:
        self.kb_id = kb_id
        self.embedding_model = embedding_model
        self.dim = dim
        self.last_seq = 0
        self.nprobe = 64  # IVF lists probed per query (set by the IndexStore from settings)
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        # Unfiltered searches run on a GPU copy of _index, made again after each change.
        self.gpu: GpuPlacement | None = None  # set by the IndexStore from settings
        self._gpu_index: faiss.Index | None = None
        # FAISS allows concurrent searches but not a search during add/remove.
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def layout(self) -> Layout:
        return "ivf" if isinstance(self._index, faiss.IndexIVF) else "flat"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace: adding an id that is already present replaces its vector."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise IndexUnusable(
                f"vectors of shape {vectors.shape} do not fit index dimension {self.dim}"
            )
        with self._lock:
            self._index.remove_ids(faiss.IDSelectorArray(ids))
            self._index.add_with_ids(vectors, ids)
            self._gpu_index = None

    def remove(self, ids: np.ndarray | list[int]) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        with self._lock:
            self._gpu_index = None
            return int(self._index.remove_ids(faiss.IDSelectorArray(ids)))

    def ids(self) -> np.ndarray:
        with self._lock:
            if isinstance(self._index, faiss.IndexIVF):
                lists = cast(Any, self._index).invlists
                parts = [
                    faiss.rev_swig_ptr(lists.get_ids(n), lists.list_size(n)).copy()
                    for n in range(self._index.nlist)
                    if lists.list_size(n)
                ]
                return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            id_map = cast(Any, self._index).id_map  # IndexIDMap2 keeps ids beside the vectors
            return faiss.vector_to_array(id_map).astype(np.int64)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top k (chunk id, cosine) best first; `allowed` restricts the search to those ids."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        with self._lock:
            total = int(self._index.ntotal)
            if total == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
                return []
            on_gpu = self._on_gpu() if allowed is None else None
            if on_gpu is not None and self.gpu is not None:
                scores, ids = self.gpu.search(on_gpu, query, min(k, total))
                return _hits(ids, scores)
            params = self._params(total, allowed)
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(self.search_threads(total))
            try:
                scores, ids = self._index.search(query, min(k, total), params=params)
            finally:
                faiss.omp_set_num_threads(threads)
        return _hits(ids, scores)

    def _on_gpu(self) -> faiss.Index | None:
        """The GPU copy of the index (made now if a change dropped it); None without a GPU or
        when the copy fails, which leaves this index on the CPU for good (logged)."""
        if self.gpu is None:
            return None
        if self._gpu_index is None:
            try:
                copy = self.gpu.to_gpu(self._index)
            except Exception:  # out of GPU memory, a layout the GPU build lacks: CPU it is
                log.exception("dense index of %s stays on the CPU", self.kb_id)
                self.gpu = None
                return None
            if isinstance(self._index, faiss.IndexIVF):
                cast(Any, copy).nprobe = min(self.nprobe, self._index.nlist)
            self._gpu_index = copy
        return self._gpu_index

    def search_threads(self, total: int) -> int:
        """OpenMP threads for one query. A single query is a small job: threads cost more in
        start-up and spinning than they save (20x slower on a busy 2-core machine, see
        bench/retrieval_scale.py) unless a flat scan is big. The setting is per thread and
        restored after the search."""
        if self.layout == "ivf" or total * self.dim < _PARALLEL_SCAN_FLOATS:
            return 1
        return int(faiss.omp_get_max_threads())

    def _params(self, total: int, allowed: np.ndarray | None) -> faiss.SearchParameters | None:
        index = self._index
        if isinstance(index, faiss.IndexIVF):
            params: Any = faiss.SearchParametersIVF()
            share = 1.0 if allowed is None else max(len(allowed), 1) / total
            # A filter leaves `share` of each list: probe 1/share more lists to see as many
            # allowed candidates as an unfiltered search sees vectors.
            params.nprobe = min(index.nlist, math.ceil(self.nprobe / min(share, 1.0)))
        elif allowed is not None:
            params = faiss.SearchParameters()
        else:
            return None
        if allowed is not None:
            params.sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        return params

    # -- layout --------------------------------------------------------------------------------

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every entry: copies, for building another layout."""
        with self._lock:
            ids = self.ids()
            if isinstance(self._index, faiss.IndexIVF):
                out = (
                    np.vstack([self._index.reconstruct(int(i)) for i in ids]) if len(ids) else None
                )
            else:
                inner: Any = faiss.downcast_index(cast(Any, self._index).index)
                n = int(inner.ntotal)
                flat = faiss.rev_swig_ptr(inner.get_xb(), n * self.dim)
                out = flat.reshape(n, self.dim).copy()
        if out is None:
            out = np.zeros((0, self.dim), dtype=np.float32)
        return ids, out

    def with_layout(self, layout: Layout, ids: np.ndarray, vectors: np.ndarray) -> KBIndex:
        """A new index of `layout` holding (ids, vectors), at this index's sequence number."""
        other = KBIndex(self.kb_id, self.embedding_model, self.dim)
        other.nprobe, other.last_seq, other.gpu = self.nprobe, self.last_seq, self.gpu
        if layout == "ivf":
            nlist = ivf_lists(len(ids))
            ivf = faiss.index_factory(self.dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
            # k-means needs about 40 points per list; more only costs training time.
            rng = np.random.default_rng(0)
            sample = rng.choice(len(ids), size=min(len(ids), 64 * nlist), replace=False)
            ivf.train(np.ascontiguousarray(vectors[np.sort(sample)]))
            cast(Any, ivf).set_direct_map_type(cast(Any, faiss).DirectMap.Hashtable)
            other._index = ivf
        other.add(ids, vectors)
        return other

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path) -> Manifest:
        """Write the snapshot atomically: data file first, manifest last (each tmp+fsync+rename)."""
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = faiss.serialize_index(self._index).tobytes()
            last_seq, count = self.last_seq, len(self)
        name = f"vectors-{last_seq}-{hashlib.sha256(data).hexdigest()[:12]}.faiss"
        atomic_write_file(directory / name, lambda fh: fh.write(data))
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            kb_id=self.kb_id,
            embedding_model=self.embedding_model,
            dim=self.dim,
            last_seq=last_seq,
            count=count,
            index_file=name,
            sha256=hashlib.sha256(data).hexdigest(),
        )
        fsync_write(directory / MANIFEST, json.dumps(asdict(manifest), indent=2).encode())
        for old in directory.glob("vectors-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return manifest

    @classmethod
    def load(cls, directory: Path, *, kb_id: str, embedding_model: str, dim: int) -> KBIndex:
        """Load a snapshot; raise IndexUnusable when it is missing, corrupt or for another model."""
        try:
            raw = json.loads((directory / MANIFEST).read_text())
            manifest = Manifest(**raw)
        except FileNotFoundError as exc:
            raise IndexUnusable(f"no index snapshot in {directory}") from exc
        except (ValueError, TypeError) as exc:
            raise IndexUnusable(f"unreadable manifest in {directory}: {exc}") from exc
        if manifest.format_version != FORMAT_VERSION or manifest.kb_id != kb_id:
            raise IndexUnusable(f"manifest in {directory} belongs to another format or KB")
        if manifest.embedding_model != embedding_model or manifest.dim != dim:
            raise IndexUnusable(
                f"snapshot was built with {manifest.embedding_model} ({manifest.dim}-d), "
                f"not {embedding_model} ({dim}-d)"
            )
        try:
            data = (directory / manifest.index_file).read_bytes()
        except FileNotFoundError as exc:
            raise IndexUnusable(f"index file {manifest.index_file} is missing") from exc
        if hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise IndexUnusable(f"index file {manifest.index_file} fails its checksum")
        try:
            loaded = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexUnusable(f"FAISS cannot read {manifest.index_file}: {exc}") from exc
        index = cls(kb_id, embedding_model, dim)
        if not isinstance(loaded, faiss.IndexIVF) and not hasattr(loaded, "id_map"):
            loaded = faiss.IndexIDMap2(loaded)
        index._index = loaded
        index.last_seq = manifest.last_seq
        if len(index) != manifest.count:
            raise IndexUnusable(f"index holds {len(index)} vectors, manifest says {manifest.count}")
        return index


def _hits(ids: np.ndarray, scores: np.ndarray) -> list[tuple[int, float]]:
    # tolist() and zip() build the pairs in C: element-wise numpy scalars cost ~35 µs per
    # query at k=50, a comprehension ~10 µs more than zip right after a scan.
    hits = list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))
    while hits and hits[-1][0] == -1:  # FAISS pads with -1 when fewer than k qualify
        hits.pop()
    return hits


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file: fsync it, rename it over `path`, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def fsync_write(path: Path, data: bytes) -> None:
    atomic_write_file(path, lambda fh: fh.write(data))
