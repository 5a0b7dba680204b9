"""`capture_content`, the one switch that lets prompts, answers and tool data into spans and
audit entries: True or False, nothing else. A text such as "false" read from a config file
or the environment is true to Python, and would record what the user meant to keep out."""

from __future__ import annotations


def content_flag(value: object) -> bool:
    """`value` when it is True or False; TypeError otherwise, naming what was given."""
    if value is True or value is False:
        return value
    raise TypeError(
        f"capture_content must be True or False, not {type(value).__name__} {value!r}"
        + (" (a text is no switch: 'false' would read as true)" if isinstance(value, str) else "")
    )
