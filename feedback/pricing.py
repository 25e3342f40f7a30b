"""Cloud cost from a versioned price table, so every stored cost says which prices produced it.

Prices are per million tokens, input and output apart, as providers publish them. A model that is
not in the table is charged the table's ``default`` price (never zero), so an unknown or renamed
model cannot slip past the event budget.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

MILLION = Decimal(1_000_000)
# Chat formatting a provider adds around each message (role markers, separators): an upper bound.
MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 16


class TokenPrice(BaseModel):
    model_config = ConfigDict(frozen=True)

    input: Decimal
    output: Decimal


class PriceTable(BaseModel):
    """``version`` is stored with every cost; change it whenever a price changes."""

    model_config = ConfigDict(frozen=True)

    version: str = "openai-2025-04"
    currency: str = "USD"
    per_million: dict[str, TokenPrice] = {
        "gpt-4.1": TokenPrice(input=Decimal("2.00"), output=Decimal("8.00")),
        "gpt-4.1-mini": TokenPrice(input=Decimal("0.40"), output=Decimal("1.60")),
        "gpt-4.1-nano": TokenPrice(input=Decimal("0.10"), output=Decimal("0.40")),
        "gpt-4o": TokenPrice(input=Decimal("2.50"), output=Decimal("10.00")),
        "gpt-4o-mini": TokenPrice(input=Decimal("0.15"), output=Decimal("0.60")),
    }
    # Anything else (the local stand-in included) is charged like gpt-4.1-mini.
    default: TokenPrice = TokenPrice(input=Decimal("0.40"), output=Decimal("1.60"))

    def price(self, model: str) -> TokenPrice:
        return self.per_million.get(model, self.default)

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> Decimal:
        """What a call with this usage costs, rounded to the database's 6 decimals."""
        price = self.price(model)
        return ((price.input * tokens_in + price.output * tokens_out) / MILLION).quantize(Decimal("0.000001"))

    def max_cost(self, model: str, messages: list[dict[str, str]], max_output_tokens: int) -> Decimal:
        """An upper bound on a call's cost, known before it is made: what the budget reserves.

        Input tokens are bounded by UTF-8 bytes (a byte-level BPE token covers at least one byte; a
        character does not bound it: one emoji is 4 bytes and up to 4 tokens) plus the formatting
        overhead; output tokens by ``max_tokens`` sent with the request.
        """
        size = sum(len((m.get("content") or "").encode("utf-8", "surrogatepass")) for m in messages)
        tokens_in = size + MESSAGE_OVERHEAD_TOKENS * len(messages) + REQUEST_OVERHEAD_TOKENS
        price = self.price(model)
        bound = (price.input * tokens_in + price.output * max_output_tokens) / MILLION
        return bound.quantize(Decimal("0.000001"), rounding="ROUND_UP")
