"""Model adapters: zero-key fakes here; Anthropic and OpenAI-compatible ones import lazily.

Importing this package imports none of its modules: each name is imported on first use.
"""

from typing import TYPE_CHECKING

from loomgraph.protocols.lazy import lazy_names

if TYPE_CHECKING:
    from loomgraph.models.echo import EchoModel
    from loomgraph.models.errors import ScriptTurnInvalid
    from loomgraph.models.scripted import ScriptedModel, ScriptExhausted, Turn

# Each public name and the module that defines it.
_MODULES = {
    "EchoModel": "loomgraph.models.echo",
    "ScriptTurnInvalid": "loomgraph.models.errors",
    "ScriptedModel": "loomgraph.models.scripted",
    "ScriptExhausted": "loomgraph.models.scripted",
    "Turn": "loomgraph.models.scripted",
}

__getattr__ = lazy_names(__name__, _MODULES, globals())

__all__ = ["EchoModel", "ScriptExhausted", "ScriptTurnInvalid", "ScriptedModel", "Turn"]
