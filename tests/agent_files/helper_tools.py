"""Tools the test agent files name by import path (found next to the file)."""


def search(query: str) -> str:
    """Search the knowledge base.

    Args:
        query: what to look for
    """
    return f"found {query}"
