"""The problems `load_graph_file` reports for a graph file (tests of validation share it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loomgraph.authoring.loader import load_graph_file
from loomgraph.errors import GraphValidationError


def problems(path: Path) -> list[str]:
    """Every problem loading the file reports, as text (the file must not load)."""
    with pytest.raises(GraphValidationError) as caught:
        load_graph_file(path)
    return [str(p) for p in caught.value.problems]
