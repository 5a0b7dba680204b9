"""The example's Agents: one per architecture, all played by the same scripted model."""

from __future__ import annotations

from typing import Any

from player import careful, sloppy
from tools import TOOLS

from loomgraph import Agent


def make_agent(architecture: str = "react", *, player: str = "sloppy", **options: Any) -> Agent:
    """An Agent with the example's tools and player, on `architecture`."""
    return Agent(
        "You are a helpful travel and shopping assistant.",
        model=careful if player == "careful" else sloppy,
        tools=TOOLS,
        architecture=architecture,
        **options,
    )
