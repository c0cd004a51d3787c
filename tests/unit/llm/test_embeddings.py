"""The offline embedder: deterministic, unit length, and lexical similarity."""

from __future__ import annotations

import math

import pytest

from troupe.config import EmbeddingSettings, LLMSettings, MemorySettings
from troupe.errors import ConfigError
from troupe.llm.embeddings import HashingEmbedder, build_embedder


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_hashing_vectors_are_unit_length_and_the_same_in_every_process() -> None:
    embedder = HashingEmbedder(64)
    (vector,) = await embedder.embed(["Kyoto temples in autumn"])
    assert len(vector) == 64
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0)
    # BLAKE2, not Python's salted hash(): a fixed text always lands in the same buckets.
    assert vector == HashingEmbedder(64).vector("Kyoto temples in autumn")
    assert (await embedder.embed([""]))[0] == [0.0] * 64


async def test_texts_sharing_words_score_higher_than_unrelated_ones() -> None:
    embedder = HashingEmbedder(384)
    query, near, inflected, far = await embedder.embed(
        [
            "budget for the Kyoto family trip",
            "The Kyoto trip for a family of four costs about 2,400 dollars",
            "budgeting trips",
            "Rust borrow checker lifetimes explained",
        ]
    )
    assert _cosine(query, near) > 0.4
    assert _cosine(query, inflected) > _cosine(query, far)
    assert abs(_cosine(query, far)) < 0.15


def test_an_openai_embedder_must_name_an_openai_provider() -> None:
    memory = MemorySettings(embeddings=EmbeddingSettings(kind="openai", provider="sim"))
    with pytest.raises(ConfigError, match=r"must name an llm\.providers entry"):
        build_embedder(memory, LLMSettings())


def test_the_default_embedder_is_offline_hashing() -> None:
    embedder = build_embedder(MemorySettings(), LLMSettings())
    assert embedder.name == "hashing-384"
    assert embedder.dimensions == 384
