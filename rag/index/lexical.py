"""One knowledge base's BM25 index (bm25s), a cache derived from SQL like the FAISS index.

bm25s cannot add documents to an index, so `LexicalIndex` keeps it the way Lucene keeps
segments: the tokenised corpus is the state (what the snapshot persists), a rarely rebuilt
*base* segment covers most documents, and a small *delta* segment, scored with the base's IDF,
the ones added since. The chunk text, its heading path and its document's title are three
fields in one matrix (prefixed terms), weighted per query term (`LexicalQuery`).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

import bm25s
import numpy as np

from rag.core.config import RetrievalSettings
from rag.core.errors import IndexUnusable
from rag.index.analyzer import ANALYZER_VERSION, Analyzer, Segmentation
from rag.index.dense import atomic_write_file, fsync_write

MANIFEST = "lexical.json"
FORMAT_VERSION = 2
HEADING, TITLE = "h:", "t:"  # field prefixes of heading-path and document-title terms
# Chunks are already length-capped by the chunker, so full length normalisation (b=0.75) mostly
# rewarded stub chunks (a heading and one sentence); b=0.3 measured best on all four golden sets.
K1, B = 1.2, 0.3
# Merge when the delta holds more than max(MERGE_MIN_DOCS, min(MERGE_FRACTION x base,
# MERGE_MAX_DOCS)) documents, or more than DELETED_FRACTION of the base is deleted: the delta,
# rebuilt on every catch-up that adds documents, stays small (<= 20k documents, about a second),
# and a merge (a full build, about a minute per million chunks) comes rarely.
MERGE_MIN_DOCS = 200
MERGE_FRACTION = 0.05
MERGE_MAX_DOCS = 20_000
DELETED_FRACTION = 0.2


def _idf(df: np.ndarray, n: int) -> np.ndarray:
    # The Lucene IDF, bm25s' default (method="lucene").
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


def _field_idf(df: np.ndarray, n: int, body_of: np.ndarray) -> np.ndarray:
    """One IDF per term, as in BM25F: a heading or title column ("h:x") takes the IDF of "x"
    over the chunks that have it in the body or that field (the larger of the two counts, a
    lower bound of their union), not its own: heading terms are rare as heading terms, and
    their own IDF let a heading match outweigh every body term. `body_of[c]`: the body column
    of field column c, -1 for body columns and fields whose term the body never had."""
    shared = df.copy()
    field = body_of >= 0
    shared[field] = np.maximum(df[field], df[body_of[field]])
    return _idf(shared, n)


_SCORE = itemgetter(1)
# The share of its IDF a question word or filler keeps when hits are matched to a query.
MATCH_FILLER_WEIGHT = 0.3


class StaleAnalyzer(IndexUnusable):
    """A readable snapshot tokenised with other analyzer options (version, user terms)."""


@dataclass(frozen=True)
class LexicalOptions:
    """How a knowledge base's BM25 index tokenises (segmentation) and weighs query terms."""

    segmentation: Segmentation = "bigrams"
    filler_weight: float = 0.2  # question words and fillers in a query
    heading_weight: float = 1.0  # a query term found in the chunk's heading path
    title_weight: float = 0.5  # ... in its document's title

    @classmethod
    def from_settings(cls, cfg: RetrievalSettings) -> LexicalOptions:
        return cls(
            cfg.lexical_segmentation,
            cfg.lexical_filler_weight,
            cfg.lexical_heading_weight,
            cfg.lexical_title_weight,
        )


@dataclass(frozen=True)
class LexicalQuery:
    """A query's known terms (token ids, sorted, each once) and their weights; `weights` is
    None when every weight is 1 (plain bm25s scoring, the fast path)."""

    ids: np.ndarray  # int32
    weights: np.ndarray | None = None  # float32, aligned with ids

    def __len__(self) -> int:
        return len(self.ids)

    def below(self, columns: int) -> LexicalQuery:
        """The terms a segment built with `columns` vocabulary entries knows."""
        keep = self.ids < columns
        weights = None if self.weights is None else self.weights[keep]
        return LexicalQuery(self.ids[keep], weights)


@dataclass
class _Segment:
    """A bm25s index over some documents: row i scores chunk `ids[i]` (ids sorted)."""

    ids: np.ndarray  # int64, sorted
    model: bm25s.BM25
    columns: int  # vocabulary size when built: newer token ids are not in this segment
    df: np.ndarray  # document frequency per column (int64)
    alive: np.ndarray  # float32 1/0 per row: 0 once deleted
    idf: np.ndarray  # the IDF per column its stored scores carry (_field_idf)

    @classmethod
    def build(
        cls, ids: np.ndarray, docs: Sequence[np.ndarray], columns: int, body_of: np.ndarray
    ) -> _Segment:
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        token_lists = [docs[i].tolist() for i in order]
        model = bm25s.BM25(k1=K1, b=B, method="lucene")
        model.scores = model.build_index_from_ids(
            unique_token_ids=list(range(columns)),
            corpus_token_ids=token_lists,
            show_progress=False,
        )
        model.vocab_dict = {}  # queries arrive as token ids; bm25s' string lookup is unused
        df = np.diff(model.scores["indptr"]).astype(np.int64)
        seg = cls(ids, model, columns, df, np.ones(len(ids), dtype=np.float32), _idf(df, len(ids)))
        seg.rescale_idf(_field_idf(df, len(ids), body_of[:columns]))
        return seg

    def rows_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Row numbers of those `chunk_ids` this segment holds."""
        pos = np.searchsorted(self.ids, chunk_ids)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        found = (self.ids[pos] == chunk_ids) if len(self.ids) else np.zeros(0, dtype=bool)
        return pos[found]

    def rescale_idf(self, idf: np.ndarray) -> None:
        """Make this segment score with the given IDF per column instead of its current one
        (bm25s stores idf x tf-part per cell, so a factor per column is exact)."""
        indptr = self.model.scores["indptr"]
        factor = np.where(self.df > 0, idf[: self.columns] / self.idf, 1.0)
        data = self.model.scores["data"]
        data *= np.repeat(factor.astype(np.float32), np.diff(indptr))
        self.idf = idf[: self.columns].astype(np.float32)

    def top(
        self, query: LexicalQuery, k: int, allowed: np.ndarray | None, top_id: int
    ) -> list[tuple[int, float]]:
        """(chunk id, score) of the k best rows with a positive score, best first; `top_id`:
        the largest of the query's ids (terms from `columns` on are newer than this segment)."""
        if top_id >= self.columns:
            query = query.below(self.columns)
        if not len(query) or not len(self.ids):
            return []
        if query.weights is None:
            scores = self.model.get_scores_from_ids(query.ids, weight_mask=self._mask(allowed))
        else:
            scores = self._weighted_scores(query.ids, query.weights) * self._mask(allowed)
        # Top k first (one partition over all rows, as bm25s' own retrieve does), then order
        # those k in Python: each numpy call after a FAISS scan costs microseconds of cold
        # caches, sorting 50 pairs costs less (bench/README.md, "Retrieval overhead").
        hits = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        ranked = sorted(
            zip(self.ids[hits].tolist(), scores[hits].tolist(), strict=True),
            key=_SCORE,
            reverse=True,  # stable: equal scores keep their order, as a stable argsort would
        )
        while ranked and ranked[-1][1] <= 0:  # rows without any query term
            ranked.pop()
        return ranked

    def _weighted_scores(self, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Sum over the query's columns of weight x the column's stored BM25 scores: bm25s'
        own sum with a weight per term (bm25s can only add columns up unweighted)."""
        matrix = self.model.scores
        indptr, indices, data = matrix["indptr"], matrix["indices"], matrix["data"]
        starts, ends = indptr[ids], indptr[ids + 1]
        if not int((ends - starts).sum()):
            return np.zeros(len(self.ids), dtype=np.float32)
        rows = np.concatenate([indices[s:e] for s, e in zip(starts, ends, strict=True)])
        values = np.concatenate(
            [data[s:e] * w for s, e, w in zip(starts, ends, weights.tolist(), strict=True)]
        )
        return np.bincount(rows, weights=values, minlength=len(self.ids)).astype(np.float32)

    def _mask(self, allowed: np.ndarray | None) -> np.ndarray:
        """Weight per row: alive, and (with a filter) among the allowed chunk ids."""
        if allowed is None:
            return self.alive
        mask = np.zeros_like(self.alive)
        rows = self.rows_of(np.asarray(allowed, dtype=np.int64))
        mask[rows] = self.alive[rows]
        return mask


@dataclass(frozen=True)
class Manifest:
    format_version: int
    analyzer_version: int
    analyzer: str  # Analyzer.fingerprint: version, segmentation, user terms
    kb_id: str
    last_seq: int
    count: int
    data_file: str
    sha256: str
    k1: float
    b: float


class LexicalIndex:
    """A knowledge base's BM25 index, kept the way Lucene keeps segments:

    * the tokenised corpus (chunk id -> token ids over one growing vocabulary) is the state; it
      is what the snapshot persists, so a restart never runs jieba over old chunks again;
    * a *base* segment, a bm25s index over most documents, built rarely (`merge`);
    * a *delta* segment over the documents added since the base was built, rebuilt from cached
      token ids whenever documents are added (`refresh`; cheap while it is small);
    * deletions zero a document's weight in whichever segment holds it (bm25s' `weight_mask`);
      the same mask carries the caller's filter, so a filtered search ranks only allowed chunks.

    Scores of the two segments must be comparable, so the delta's columns are rescaled from its
    own IDF to the base's (terms the base lacks get an IDF over both segments). bm25s stores
    idf x tf-part per cell, so a per-column factor is exact for the IDF part; length
    normalisation keeps each segment's own average length. Until the next merge the IDF lags the
    delta by at most a few per cent of the documents, like Lucene's statistics before segments
    merge. `needs_merge` says when the delta (or the deleted share of the base) has grown enough
    that the caller should `merge` off the query path: the new base is built outside the lock
    and swapped in.
    """

    def __init__(
        self,
        kb_id: str,
        analyzer: Analyzer | None = None,
        options: LexicalOptions | None = None,
    ) -> None:
        self.kb_id = kb_id
        self.options = options or LexicalOptions()
        self.analyzer = analyzer or Analyzer()
        self.last_seq = 0
        self._vocab: dict[str, int] = {}
        self._docs: dict[int, np.ndarray] = {}  # chunk id -> int32 token ids
        self._body_of: list[int] = []  # per vocabulary entry, see _body_column
        self._fields_seen: set[str] = set()  # field prefixes some document has terms in
        self._base: _Segment | None = None
        self._delta: _Segment | None = None
        self._delta_stale = False
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._docs)

    def ids(self) -> np.ndarray:
        with self._lock:
            return np.fromiter(self._docs, dtype=np.int64, count=len(self._docs))

    # -- updates -------------------------------------------------------------------------------

    def add_texts(
        self,
        ids: Iterable[int],
        texts: Iterable[str],
        headings: Iterable[Sequence[str]] | None = None,
        titles: Iterable[str] | None = None,
    ) -> None:
        """Tokenise and add (or replace) documents; the delta is rebuilt by `refresh`.

        The body field is the chunk text alone: repeating the heading in every chunk of a
        section made the later chunks outrank the section's first one, which opens with its
        heading (docs/retrieval.md). The heading path and the document title are their own
        fields (terms prefixed HEADING / TITLE), weighted per query (`query`): every chunk of a
        section gains the same from its heading, so the body still decides inside the section.
        """
        texts = list(texts)
        heading_list = list(headings) if headings is not None else [()] * len(texts)
        title_list = list(titles) if titles is not None else [""] * len(texts)
        tokenised = [
            (int(i), self._fields(text, heading, title))
            for i, text, heading, title in zip(ids, texts, heading_list, title_list, strict=True)
        ]
        if not tokenised:
            return
        with self._lock:
            replaced = np.array([i for i, _ in tokenised if i in self._docs], dtype=np.int64)
            self._kill(replaced)
            for chunk_id, tokens in tokenised:
                self._docs[chunk_id] = self._token_ids(tokens)
            self._delta_stale = True

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        ids = np.asarray(ids, dtype=np.int64)
        with self._lock:
            present = [int(i) for i in ids if int(i) in self._docs]
            for chunk_id in present:
                del self._docs[chunk_id]
            self._kill(np.asarray(present, dtype=np.int64))
            return len(present)

    def refresh(self) -> None:
        """Rebuild the delta segment if documents were added since it was built."""
        with self._lock:
            if not self._delta_stale:
                return
            delta_ids = self.ids()
            if self._base is None and len(delta_ids) > MERGE_MIN_DOCS:
                # First build of a sizeable corpus (a fresh index, a restart without snapshot):
                # make it the base at once rather than a delta that a merge rebuilds next.
                self._base = _Segment.build(
                    delta_ids,
                    [self._docs[int(i)] for i in delta_ids],
                    len(self._vocab),
                    self._body_column(),
                )
                self._delta, self._delta_stale = None, False
                return
            if self._base is not None:
                delta_ids = np.setdiff1d(delta_ids, self._base.ids[self._base.alive > 0])
            self._delta = None
            if len(delta_ids):
                body_of = self._body_column()
                self._delta = _Segment.build(
                    delta_ids, [self._docs[int(i)] for i in delta_ids], len(self._vocab), body_of
                )
                if self._base is not None:
                    self._delta.rescale_idf(self._shared_idf(self._base, self._delta, body_of))
            self._delta_stale = False

    @staticmethod
    def _shared_idf(base: _Segment, delta: _Segment, body_of: np.ndarray) -> np.ndarray:
        """IDF for the delta: the base's wherever the base knows the term (so a document scores
        the same in either segment), else from base and delta counted together."""
        df = delta.df.copy()
        df[: base.columns] += base.df
        idf = _field_idf(df, len(base.ids) + len(delta.ids), body_of[: delta.columns])
        known = base.df > 0
        idf[: base.columns][known] = base.idf[known]
        return idf

    def _body_column(self) -> np.ndarray:
        """Per vocabulary entry, the body column of a field term ("h:x" -> id of "x"), -1 for
        body terms and for fields whose term was not in the vocabulary before them (so the
        mapping depends only on the vocabulary's order: a snapshot restores it exactly)."""
        known = len(self._body_of)
        if known < len(self._vocab):
            words = list(self._vocab)[known:]
            for n, word in enumerate(words, start=known):
                body = -1
                if word.startswith((HEADING, TITLE)):
                    body = self._vocab.get(word[2:], -1)  # both prefixes are 2 characters
                    body = body if body < n else -1
                self._body_of.append(body)
        return np.asarray(self._body_of, dtype=np.int64)

    def needs_merge(self) -> bool:
        with self._lock:
            base = len(self._base.ids) if self._base else 0
            base_alive = int(self._base.alive.sum()) if self._base else 0
            delta, dead = len(self._docs) - base_alive, base - base_alive
            allowed = max(MERGE_MIN_DOCS, min(MERGE_FRACTION * base, MERGE_MAX_DOCS))
            return delta > allowed or (base > 0 and dead > DELETED_FRACTION * base)

    def merge(self) -> None:
        """Fold the delta and the deletions into a new base; built outside the lock."""
        with self._lock:
            snapshot = dict(self._docs)
            columns = len(self._vocab)
            body_of = self._body_column()
        ids = np.fromiter(snapshot, dtype=np.int64, count=len(snapshot))
        base = _Segment.build(ids, list(snapshot.values()), columns, body_of) if len(ids) else None
        with self._lock:
            if base is not None:
                # Documents deleted or replaced while the base was being built.
                gone = np.array(
                    [i for i, tokens in snapshot.items() if self._docs.get(i) is not tokens],
                    dtype=np.int64,
                )
                base.alive[base.rows_of(gone)] = 0
            self._base = base
            self._delta_stale = True
        self.refresh()

    def _kill(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        for seg in (self._base, self._delta):
            if seg is not None:
                seg.alive[seg.rows_of(ids)] = 0

    def _fields(self, text: str, heading: Sequence[str], title: str) -> list[str]:
        tokens = self.analyzer.tokenize(text)
        if heading:
            tokens += [HEADING + t for t in self.analyzer.tokenize(" ".join(heading))]
            self._fields_seen.add(HEADING)
        if title:
            tokens += [TITLE + t for t in self.analyzer.tokenize(title)]
            self._fields_seen.add(TITLE)
        return tokens

    def _token_ids(self, tokens: list[str]) -> np.ndarray:
        vocab = self._vocab
        out = np.empty(len(tokens), dtype=np.int32)
        for n, token in enumerate(tokens):
            tid = vocab.get(token)
            if tid is None:
                tid = vocab[token] = len(vocab)
            out[n] = tid
        return out

    # -- search --------------------------------------------------------------------------------

    def query(self, text: str) -> LexicalQuery:
        """A query's known terms with their weights: question words and fillers weighted down
        (`LexicalOptions.filler_weight`), each term also looked up in the heading and title
        fields with their weights."""
        opts = self.options
        # Outside the lock: it only reads the query.
        terms = self.analyzer.query_terms(text, opts.filler_weight)
        found: dict[int, float] = {}
        with self._lock:
            vocab = self._vocab
            for term, weight in terms.items():
                tid = vocab.get(term)
                if tid is not None:
                    found[tid] = weight
            for prefix, field_weight in (
                (HEADING, opts.heading_weight),
                (TITLE, opts.title_weight),
            ):
                if field_weight <= 0 or prefix not in self._fields_seen:
                    continue  # e.g. a corpus without headings: no lookups for nothing
                for term, weight in terms.items():
                    tid = vocab.get(prefix + term)
                    if tid is not None:
                        found[tid] = weight * field_weight
        order = sorted(found)
        ids = np.array(order, dtype=np.int32)
        values = [found[i] for i in order]
        if all(v == 1.0 for v in values):
            return LexicalQuery(ids)  # bm25s' own sum: the fast path
        return LexicalQuery(ids, np.array(values, dtype=np.float32))

    def query_ids(self, text: str) -> LexicalQuery:
        """`query` under its older name (callers that pass it straight to `search`)."""
        return self.query(text)

    def term_idf(self, tokens: Sequence[str]) -> tuple[np.ndarray, float]:
        """Each token's IDF over the indexed chunks, and the IDF of a term no chunk holds (the
        largest): how rare, hence how telling, a query term is. Read by rag/retrieval (the
        query's shape for adaptive fusion, a hit's best sentence)."""
        with self._lock:
            if self._delta_stale:
                self.refresh()
            segments = [s for s in (self._base, self._delta) if s is not None]
            df = np.zeros(len(tokens), dtype=np.int64)
            for n, token in enumerate(tokens):
                tid = self._vocab.get(token)
                if tid is not None:
                    df[n] = sum(int(s.df[tid]) for s in segments if tid < s.columns)
            count = max(sum(len(s.ids) for s in segments), 1)
        return _idf(df, count), float(_idf(np.zeros(1, dtype=np.int64), count)[0])

    def telling_terms(self, query: str) -> dict[str, float]:
        """Each distinct term of `query` with how telling it is here: its IDF, times
        MATCH_FILLER_WEIGHT for question words and fillers. What a hit's sentences (page
        locating) and its text (relevance) are matched against."""
        weighted = self.analyzer.query_terms(query, MATCH_FILLER_WEIGHT)
        idf, _ = self.term_idf(list(weighted))
        return {t: v * w for (t, w), v in zip(weighted.items(), idf.tolist(), strict=True)}

    def search(
        self, query: LexicalQuery | np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top k (chunk id, BM25 score) with a positive score; `allowed` restricts the ranking
        to those chunk ids (sorted int64). A bare array of token ids weighs each term 1."""
        if not isinstance(query, LexicalQuery):
            query = LexicalQuery(np.asarray(query, dtype=np.int32))
        if not len(query) or k <= 0:
            return []
        with self._lock:
            if self._delta_stale:
                self.refresh()
            base, delta = self._base, self._delta
            top_id = int(query.ids.max())
            if base is None or delta is None:  # one segment, the usual case: already ranked
                seg = base or delta
                return seg.top(query, k, allowed, top_id) if seg else []
            hits = base.top(query, k, allowed, top_id) + delta.top(query, k, allowed, top_id)
        hits.sort(key=_SCORE, reverse=True)  # stable: on equal scores the base comes first
        return hits[:k]

    # -- persistence ---------------------------------------------------------------------------

    def save(self, directory: Path) -> Manifest:
        """Snapshot the tokenised corpus and the base segment: data file, then manifest."""
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            arrays = self._arrays()
            last_seq, count = self.last_seq, len(self._docs)
        buffer = io.BytesIO()
        cast(Any, np.savez)(buffer, **arrays)  # numpy's stub reads ** as its allow_pickle
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        name = f"lexical-{last_seq}-{digest[:12]}.npz"
        atomic_write_file(directory / name, lambda fh: fh.write(data))
        manifest = Manifest(
            FORMAT_VERSION,
            ANALYZER_VERSION,
            self.analyzer.fingerprint,
            self.kb_id,
            last_seq,
            count,
            name,
            digest,
            K1,
            B,
        )
        fsync_write(directory / MANIFEST, json.dumps(asdict(manifest), indent=2).encode())
        for old in directory.glob("lexical-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return manifest

    def _arrays(self) -> dict[str, np.ndarray]:
        ids = self.ids()
        docs = [self._docs[int(i)] for i in ids]
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        vocab = json.dumps(list(self._vocab), ensure_ascii=False).encode()
        arrays = {
            "ids": ids,
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "tokens": np.concatenate(docs) if docs else np.zeros(0, dtype=np.int32),
            "vocab": np.frombuffer(vocab, dtype=np.uint8),
        }
        if self._base is not None:
            scores = self._base.model.scores
            arrays |= {
                "base_ids": self._base.ids,
                "base_alive": self._base.alive,
                "base_df": self._base.df,
                "base_columns": np.array([self._base.columns], dtype=np.int64),
                "base_data": scores["data"],
                "base_indices": scores["indices"],
                "base_indptr": scores["indptr"],
            }
        return arrays

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        kb_id: str,
        analyzer: Analyzer | None = None,
        options: LexicalOptions | None = None,
    ) -> LexicalIndex:
        """Load a snapshot; IndexUnusable when it is missing or corrupt, StaleAnalyzer when it
        was tokenised otherwise than `analyzer` would (version, segmentation, user terms)."""
        analyzer = analyzer or Analyzer()
        try:
            raw = json.loads((directory / MANIFEST).read_text())
        except FileNotFoundError as exc:
            raise IndexUnusable(f"no lexical snapshot in {directory}") from exc
        except ValueError as exc:
            raise IndexUnusable(f"unreadable lexical manifest in {directory}: {exc}") from exc
        if isinstance(raw, dict) and raw.get("analyzer_version") != ANALYZER_VERSION:
            raise StaleAnalyzer(
                f"lexical snapshot was made by tokeniser version {raw.get('analyzer_version')}, "
                f"not {ANALYZER_VERSION}"
            )
        if isinstance(raw, dict) and raw.get("analyzer") != analyzer.fingerprint:
            raise StaleAnalyzer(
                f"lexical snapshot was made by tokeniser {raw.get('analyzer')!r}, "
                f"not {analyzer.fingerprint!r} (other segmentation or user terms)"
            )
        try:
            manifest = Manifest(**raw)
        except TypeError as exc:
            raise IndexUnusable(f"unreadable lexical manifest in {directory}: {exc}") from exc
        if manifest.format_version != FORMAT_VERSION or manifest.kb_id != kb_id:
            raise IndexUnusable(f"lexical manifest in {directory} belongs to another format or KB")
        if (manifest.k1, manifest.b) != (K1, B):
            raise IndexUnusable(
                f"lexical snapshot was scored with k1={manifest.k1}, b={manifest.b}"
            )
        try:
            data = (directory / manifest.data_file).read_bytes()
        except FileNotFoundError as exc:
            raise IndexUnusable(f"lexical file {manifest.data_file} is missing") from exc
        if hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise IndexUnusable(f"lexical file {manifest.data_file} fails its checksum")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (ValueError, OSError, KeyError) as exc:
            raise IndexUnusable(f"cannot read {manifest.data_file}: {exc}") from exc
        index = cls(kb_id, analyzer, options)
        index._restore(arrays)
        index.last_seq = manifest.last_seq
        if len(index) != manifest.count:
            raise IndexUnusable(
                f"lexical index holds {len(index)} docs, manifest says {manifest.count}"
            )
        return index

    def _restore(self, a: dict[str, np.ndarray]) -> None:
        words = json.loads(a["vocab"].tobytes().decode())
        self._vocab = {w: i for i, w in enumerate(words)}
        self._fields_seen = {f for f in (HEADING, TITLE) if any(w.startswith(f) for w in words)}
        offsets, tokens = a["offsets"], a["tokens"].astype(np.int32)
        self._docs = {
            int(cid): tokens[offsets[n] : offsets[n + 1]] for n, cid in enumerate(a["ids"])
        }
        if "base_ids" in a:
            model = bm25s.BM25(k1=K1, b=B, method="lucene")
            model.scores = {
                "data": a["base_data"],
                "indices": a["base_indices"],
                "indptr": a["base_indptr"],
                "num_docs": len(a["base_ids"]),
            }
            model.vocab_dict = {}
            model.nonoccurrence_array = None  # only BM25L/BM25+ have one
            columns, df = int(a["base_columns"][0]), a["base_df"]
            idf = _field_idf(df, len(a["base_ids"]), self._body_column()[:columns])
            self._base = _Segment(a["base_ids"], model, columns, df, a["base_alive"], idf)
            self._kill(np.setdiff1d(self._base.ids, a["ids"]))
        self._delta_stale = True
        self.refresh()
