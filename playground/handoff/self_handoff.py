"""The ``self`` policy: the local model is offered a ``handoff_to_cloud(reason)`` tool and decides.

The tool goes through the model's own chat template (``apply_chat_template(tools=…)``); gpt-oss
renders it in harmony and calls it natively. A model whose template ignores tools (the bundled
SmolLM2-135M) could never call it, so the policy refuses to start instead of silently never
handing off.
"""

from __future__ import annotations

import inspect
import json
import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from playground.handoff.base import PolicyInput, PolicyUnavailable

if TYPE_CHECKING:
    from playground.engine.contract import LocalModelEngine

TOOL_NAME = "handoff_to_cloud"
HANDOFF_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": (
            "Hand this conversation to a stronger cloud model when you are not confident you can "
            "answer it well (hard reasoning, facts you do not know, long code). Say why."
        ),
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why the cloud model should answer."}},
            "required": ["reason"],
        },
    },
}
# The call as text: harmony (``to=functions.handoff_to_cloud … {"reason": …}``, special tokens
# stripped or not) or a JSON tool call (``{"name": "handoff_to_cloud", "arguments": {…}}``) that is the
# answer itself or inside ``<tool_call>``. The name merely quoted in prose ("the "handoff_to_cloud"
# tool") is not a call: answer text is the model's, and a prompt can make it say anything.
_CALL = re.compile(
    r"""\bto=functions\.handoff_to_cloud\b"""
    r"""|(?:\A\s*|<tool_call>\s*)\{\s*["']name["']\s*:\s*["']handoff_to_cloud["']"""
)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")


def parse_handoff_call(text: str) -> str | None:
    """The reason if ``text`` calls the handoff tool ('' when it gave none), else None."""
    match = _CALL.search(text)
    if match is None:
        return None
    for candidate in _JSON_OBJECT.finditer(text, match.end()):
        try:
            arguments = json.loads(candidate.group())
        except json.JSONDecodeError:
            continue
        if isinstance(arguments, dict) and "reason" in arguments:
            return str(arguments["reason"])
    return ""


def template_offers_tools(tokenizer: Any) -> bool:
    """True when the chat template renders a tool it is given (so the model can see and call it)."""
    try:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}], tools=[HANDOFF_TOOL], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # noqa: BLE001 - a template that fails on tools does not offer them
        return False
    return TOOL_NAME in rendered


class SelfHandoffPolicy:
    """score = 1.0 if the local model called ``handoff_to_cloud``, else 0.0; reason = its reason."""

    name: ClassVar[str] = "self"
    version = "1"
    stage: ClassVar[Literal["post"]] = "post"
    early: ClassVar[bool] = False
    tools: ClassVar[list[dict[str, Any]]] = [HANDOFF_TOOL]

    @classmethod
    def for_engine(cls, engine: LocalModelEngine | None) -> SelfHandoffPolicy:
        """Check at start-up that this local model can be offered the tool; raise if not."""
        if engine is None:
            raise PolicyUnavailable("The self policy needs the local engine to check its chat template.")
        if getattr(engine, "tokenizer", None) is None:
            raise PolicyUnavailable(
                f"The self-handoff policy reads the local model's tool calls as text, but the {engine.kind} engine's "
                "chat template lives on its server. Use HANDOFF_LOCAL_ENGINE=transformers or llamacpp, or another policy."
            )
        if not template_offers_tools(engine.tokenizer):
            raise PolicyUnavailable(
                f"The self-handoff policy needs a local model whose chat template supports tool calls; "
                f"{engine.model_name}'s template ignores tools, so it could never hand off. "
                "Use a tool-calling model (e.g. HANDOFF_LOCAL_MODEL=openai/gpt-oss-20b) or another policy."
            )
        if "tools" not in inspect.signature(engine.generate).parameters:
            raise PolicyUnavailable("This local engine cannot pass tools to the chat template; self-handoff is off.")
        return cls()

    def score(self, data: PolicyInput, signals: dict[str, Any]) -> tuple[float, str | None]:
        reason = parse_handoff_call(data.draft)
        signals["self_handoff_called"] = reason is not None
        signals["self_handoff_reason"] = reason
        if reason is None:
            return 0.0, None
        return (
            1.0,
            f"the local model asked for the cloud: {reason}" if reason else "the local model asked for the cloud",
        )
