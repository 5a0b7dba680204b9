"""Node kinds from the `loomgraph.nodes` entry-point group, as a third-party package adds them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loomgraph.graph import registry


def test_a_kind_from_an_installed_distribution_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shout_nodes.py").write_text(
        "from loomgraph import NodeKind\n"
        "class Shout(NodeKind):\n"
        "    default_reads = ('input',)\n    default_writes = ('output',)\n"
        "    async def run(self, state, ctx):\n        return {'output': state['input'].upper()}\n"
    )
    dist = tmp_path / "shout_nodes-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-nodes\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[loomgraph.nodes]\nshout = shout_nodes:Shout\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert registry.node_kind("shout").__name__ == "Shout"
        assert "shout" in registry.known_kinds()
    finally:
        registry._REGISTRY.pop("shout", None)
        sys.modules.pop("shout_nodes", None)


def test_unknown_kind_lists_the_registered_ones() -> None:
    with pytest.raises(registry.UnknownNodeKind, match=r"registered kinds: .*model"):
        registry.node_kind("no-such-kind")
