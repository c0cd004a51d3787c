"""Token counts and money: conservative estimates before a call, exact cost after."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from troupe.config import ModelPrice
from troupe.llm.messages import ChatMessage, TokenUsage

# Per-message framing tokens (role markers) that chat formats add around content.
_MESSAGE_OVERHEAD = 4


def estimate_prompt_tokens(messages: Iterable[ChatMessage]) -> int:
    """An upper-leaning estimate: one token per 3 characters, plus framing.

    Real tokenizers average ~4 characters per English token; 3 keeps the estimate
    on the safe side for budget checks.
    """
    return sum(-(-len(m.content) // 3) + _MESSAGE_OVERHEAD for m in messages)


def cost_micro_usd(usage: TokenUsage, price: ModelPrice) -> int:
    """Cost in integer micro-dollars, rounded up so a cost is never under-reported.

    Prompt tokens the provider served from its own cache cost ``cached_input`` when the
    model has that price."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    numerator = (
        (usage.prompt_tokens - cached) * price.input
        + cached * cached_price
        + usage.completion_tokens * price.output
    )
    return -(-numerator // 1_000_000)


def price_for(model: str, table: Mapping[str, ModelPrice]) -> ModelPrice:
    """The configured price of ``model``; an unpriced model is a configuration error."""
    from troupe.errors import ConfigError

    try:
        return table[model]
    except KeyError:
        raise ConfigError(
            f"llm.pricing has no entry for model {model!r}: add one to config/multi-agent.yaml"
        ) from None
