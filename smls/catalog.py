"""The served models: SMLS_MODELS parsed into named entries, each validated at start-up.

    SMLS_MODELS="mini=embedded,mpnet=data/models/all-mpnet-base-v2;backend=torch,judge=/srv/ce"

Entries are separated by commas; each is `name=path`, optionally followed by `;key=value`
settings of that model alone:
  backend     torch, onnx or onnx-int8 (embedding models; default SMLS_BACKEND).
              A cross-encoder runs on torch.
  kind        embedding or cross-encoder; found from the folder when not given
              (sentence-transformers writes it into config_sentence_transformers.json).
  batch_size  sentences (or pairs) per forward pass (default SMLS_BATCH_SIZE).
  prompts     name:prefix pairs separated by '|' (prompts=query:query: |passage:passage: ),
              in place of the folder's own (config_sentence_transformers.json); a
              prefix is kept exactly as written, spaces included.
  matryoshka  true: the model was trained for shortened `dimensions` (false by default).
  truncation  right (the default) or left: which end of a text longer than the model
              takes is kept. left keeps the end; it is the model's default for
              requests and the only direction its documents' vectors use.
`path` is a model folder (a bare folder name that is not found where smls starts is
looked for in <SMLS_DATA_DIR>/models/), the word `embedded` for the shipped
all-MiniLM-L6-v2, or left out (`mpnet` alone): then the folder <SMLS_DATA_DIR>/models/<name>.
The first embedding model is the default unless SMLS_DEFAULT_MODEL names another.

Pure parsing plus file checks; no torch, no flask (gunicorn.conf.py validates with it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from smls.errors import StartupError
from smls.model_dirs import check_model_dir, embedded_model_path
from smls.prompts import parse_setting as parse_prompts

KINDS = ("embedding", "cross-encoder")
EMBEDDED = "embedded"
# Names travel in URLs, query strings, JSON and Prometheus labels: keep them plain.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OPTION_KEYS = ("backend", "kind", "batch_size", "truncation", "prompts", "matryoshka")


@dataclass(frozen=True)
class ModelEntry:
    """One entry of SMLS_MODELS as written: a name, where its folder is, and its own settings."""

    name: str
    source: str  # the path as written, "embedded", or "" (data/models/<name>)
    backend: str | None = None
    kind: str | None = None
    batch_size: int | None = None
    truncation: str = "right"
    prompts: dict[str, str] | None = None  # None: the folder's own
    matryoshka: bool = False

    def folder(self, data_dir: Path) -> Path:
        """The folder this entry names (not yet checked)."""
        if self.source == EMBEDDED:
            return embedded_model_path()
        if not self.source:
            return data_dir / "models" / self.name
        path = Path(self.source).expanduser()
        if not path.exists() and "/" not in self.source and (data_dir / "models" / self.source).exists():
            return data_dir / "models" / self.source  # mpnet=all-mpnet-base-v2: a folder name under data/models
        return path


def parse_models(raw: str, backends: tuple[str, ...]) -> list[ModelEntry]:
    """The entries of an SMLS_MODELS value, or StartupError naming the entry at fault."""
    entries: list[ModelEntry] = []
    for number, text in enumerate(raw.split(","), start=1):
        if not text.strip():
            raise StartupError(f"SMLS_MODELS entry {number} is empty; write name=path entries separated by commas")
        # (not stripped whole: a prompt's prefix keeps its spaces, its last one too)
        head, *settings = text.lstrip().split(";")
        head = head.strip()
        text = text.strip()
        name, _, source = (part.strip() for part in head.partition("="))
        where = f"SMLS_MODELS entry {number} ({text!r})"
        if not NAME_PATTERN.fullmatch(name):
            raise StartupError(f"{where}: the name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if "=" in head and not source:
            raise StartupError(f"{where}: the path after '=' is empty; write {name}=path, {name}=embedded, or {name} alone for data/models/{name}")
        options: dict[str, str] = {}
        for setting in settings:
            key, eq, value = setting.partition("=")
            key, value = key.strip(), (value if key.strip() == "prompts" else value.strip())
            if not eq or key not in _OPTION_KEYS or not value:
                raise StartupError(f"{where}: {setting!r} is not a setting; use {', '.join(k + '=...' for k in _OPTION_KEYS)}")
            if key in options:
                raise StartupError(f"{where}: {key} is given twice")
            options[key] = value
        backend = options.get("backend")
        if backend is not None and backend not in backends:
            raise StartupError(f"{where}: backend must be one of {', '.join(backends)}, got {backend!r}")
        kind = options.get("kind")
        if kind is not None and kind not in KINDS:
            raise StartupError(f"{where}: kind must be embedding or cross-encoder, got {kind!r}")
        if kind == "cross-encoder" and backend not in (None, "torch"):
            raise StartupError(f"{where}: a cross-encoder runs on torch; drop backend={backend} or make it torch")
        batch_size = None
        if "batch_size" in options:
            if not options["batch_size"].isdigit() or int(options["batch_size"]) < 1:
                raise StartupError(f"{where}: batch_size must be a whole number of at least 1, got {options['batch_size']!r}")
            batch_size = int(options["batch_size"])
        truncation = options.get("truncation", "right")
        if truncation not in ("right", "left"):
            raise StartupError(f"{where}: truncation must be right or left, got {truncation!r}")
        if truncation == "left" and kind == "cross-encoder":
            raise StartupError(f"{where}: a cross-encoder cuts a (query, document) pair on the right; drop truncation=left")
        prompts = None if "prompts" not in options else parse_prompts(options["prompts"], where)
        matryoshka = options.get("matryoshka", "false")
        if matryoshka not in ("true", "false"):
            raise StartupError(f"{where}: matryoshka must be true or false, got {matryoshka!r}")
        if any(e.name == name for e in entries):
            raise StartupError(f"{where}: the name {name!r} is used twice; every model needs a name of its own")
        entries.append(ModelEntry(name, source, backend, kind, batch_size, truncation, prompts, matryoshka == "true"))
    return entries


def detect_kind(path: Path) -> str:
    """Whether the folder holds a sentence embedding model or a cross-encoder (a classifier of text pairs)."""
    st_config = _read_json(path / "config_sentence_transformers.json")
    if st_config.get("model_type") == "CrossEncoder":
        return "cross-encoder"
    if st_config.get("model_type") == "SentenceTransformer" or (path / "modules.json").is_file():
        return "embedding"
    architectures = _read_json(path / "config.json").get("architectures")
    if isinstance(architectures, list) and any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"  # a plain transformers classifier, as older cross-encoders were saved
    return "embedding"


def check_kind(entry_name: str, path: Path, declared: str | None) -> str:
    """The entry's kind: as declared, unless the folder says otherwise for certain (then StartupError)."""
    found = detect_kind(path)
    if declared is None or declared == found:
        return found
    st_type = _read_json(path / "config_sentence_transformers.json").get("model_type")
    if st_type in ("CrossEncoder", "SentenceTransformer"):
        raise StartupError(
            f"model {entry_name!r} is declared kind={declared}, but {path} holds a {found} model (its config_sentence_transformers.json says {st_type})"
        )
    return declared


def _read_json(path: Path) -> dict[str, object]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


EMBEDDED_MODEL_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ModelSpec:
    """A served model, resolved: its name, checked folder, kind and own settings (None: the server's)."""

    name: str
    path: Path
    kind: str
    backend: str | None = None
    batch_size: int | None = None
    origin: str = "SMLS_MODELS"  # where the folder came from, for the start-up log
    truncation: str = "right"  # which end of a long text the model keeps
    prompts: dict[str, str] | None = None  # in place of the folder's own; None: the folder's
    matryoshka: bool = False  # trained for shortened dimensions

    @property
    def embeds(self) -> bool:
        """Whether this model makes sentence embeddings (else it scores pairs)."""
        return self.kind == "embedding"


def default_name(path: Path) -> str:
    """The name clients see for a model folder: the embedded model's real name, else the folder name."""
    try:
        if path == embedded_model_path().resolve():
            return EMBEDDED_MODEL_NAME
    except StartupError:
        pass
    return path.name


@dataclass(frozen=True)
class Catalog:
    """Every served model, in the order configured, and the name of the default (an embedding model)."""

    models: tuple[ModelSpec, ...]
    default: str

    @property
    def default_spec(self) -> ModelSpec:
        """The default model's spec."""
        return next(s for s in self.models if s.name == self.default)


def resolve_entries(entries: list[ModelEntry], data_dir: Path, default: str | None) -> Catalog:
    """Check every entry's folder and kind, and choose the default. StartupError names the entry at fault."""
    specs = []
    for entry in entries:
        folder = check_model_dir(entry.folder(data_dir), f"SMLS_MODELS entry {entry.name!r}")
        kind = check_kind(entry.name, folder, entry.kind)
        if kind == "cross-encoder" and entry.backend not in (None, "torch"):
            raise StartupError(f"model {entry.name!r} is a cross-encoder, which runs on torch; drop backend={entry.backend}")
        if kind == "cross-encoder" and entry.truncation == "left":
            raise StartupError(f"model {entry.name!r} is a cross-encoder, which cuts a (query, document) pair on the right; drop truncation=left")
        specs.append(
            ModelSpec(
                entry.name, folder, kind, entry.backend, entry.batch_size, truncation=entry.truncation, prompts=entry.prompts, matryoshka=entry.matryoshka
            )
        )
    embedders = [s for s in specs if s.embeds]
    if not embedders:
        raise StartupError("SMLS_MODELS has no embedding model; /embed, /v1/embeddings and /documents need one (add name=embedded)")
    if default is None:
        chosen = embedders[0]
    else:
        named = [s for s in specs if s.name == default]
        if not named:
            raise StartupError(f"SMLS_DEFAULT_MODEL={default!r} is not in SMLS_MODELS ({', '.join(s.name for s in specs)})")
        chosen = named[0]
        if not chosen.embeds:
            raise StartupError(f"SMLS_DEFAULT_MODEL={default!r} is a cross-encoder; the default must be an embedding model")
    return Catalog(tuple(specs), chosen.name)
