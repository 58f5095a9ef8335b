"""Whether this process searches by meaning too, and with which model; never imports numpy.

Semantic search is the optional extra ``memfts[semantic]``: installed, it is on, unless
``MEMFTS_SEMANTIC=off``; not installed, nothing of it is imported and memfts behaves exactly
as without it. ``MEMFTS_EMBEDDING_MODEL`` names another static embedding model: a folder in
model2vec's layout (``tokenizer.json`` + ``model.safetensors``). :mod:`memfts.semantic` does
the work.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from memfts.errors import MemftsError

if TYPE_CHECKING:
    import apsw

    from memfts.semantic import Semantic

FoundBy = Literal["lexical", "semantic"]
"""What found a search hit: its words (the full-text ranking) or its meaning (the vectors)."""

SWITCH_ENV = "MEMFTS_SEMANTIC"
MODEL_ENV = "MEMFTS_EMBEDDING_MODEL"
DEFAULT_MODEL = "wordllama"
INSTALL_HINT = "pip install 'memfts[semantic]'"

_ON = ("1", "on", "yes", "true")
_OFF = ("0", "off", "no", "false")


class SemanticSetupError(MemftsError):
    """Semantic search was asked for but cannot run (extra missing, model unreadable)."""


def installed(model: str = DEFAULT_MODEL) -> bool:
    """True when the extra's packages are importable (checked without importing them)."""
    needed = ["numpy", "tokenizers", "safetensors"]
    if model == DEFAULT_MODEL:
        needed.append("wordllama")
    return all(find_spec(name) is not None for name in needed)


def wanted(environ: dict[str, str] | None = None) -> str | None:
    """The model to search with, or None when semantic search is off in this process.

    Raises :class:`SemanticSetupError` when ``MEMFTS_SEMANTIC=on`` asks for it and the extra
    is missing, or ``MEMFTS_EMBEDDING_MODEL`` names a folder that does not exist.
    """
    env = os.environ if environ is None else environ
    switch = env.get(SWITCH_ENV, "").strip().lower()
    if switch in _OFF:
        return None
    if switch and switch not in _ON:
        raise SemanticSetupError(
            f"{SWITCH_ENV}={env[SWITCH_ENV]!r}: say on or off (unset: on when the semantic "
            "extra is installed)"
        )
    model = env.get(MODEL_ENV, "").strip() or DEFAULT_MODEL
    if model != DEFAULT_MODEL and not Path(model).expanduser().is_dir():
        raise SemanticSetupError(
            f"{MODEL_ENV}={model!r} is not a folder: give the path of a static embedding "
            "model in model2vec's layout (tokenizer.json and model.safetensors), or unset it "
            f"for the built-in {DEFAULT_MODEL} model"
        )
    if installed(model):
        return model
    if switch in _ON or model != DEFAULT_MODEL:
        raise SemanticSetupError(
            f"semantic search needs the semantic extra, which is not installed: {INSTALL_HINT}"
        )
    return None


def open_semantic(conn: apsw.Connection, environ: dict[str, str] | None = None) -> Semantic | None:
    """The semantic arm for this connection's database, or None when it is off."""
    model = wanted(environ)
    if model is None:
        return None
    from memfts.semantic import Semantic, load_model

    return Semantic(load_model(model))
