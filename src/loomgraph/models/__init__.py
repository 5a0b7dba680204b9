"""Model adapters: zero-key fakes here; Anthropic and OpenAI-compatible ones import lazily."""

from loomgraph.models.echo import EchoModel
from loomgraph.models.errors import ScriptTurnInvalid
from loomgraph.models.scripted import ScriptedModel, ScriptExhausted, Turn

__all__ = ["EchoModel", "ScriptExhausted", "ScriptTurnInvalid", "ScriptedModel", "Turn"]
