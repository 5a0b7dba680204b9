"""How the run viewer's pages are made: the Jinja2 templates, the text they show (every
`{{ }}` escaped for disguising characters), the forms they send and the page that failed."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Undefined
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.templating import Jinja2Templates

from loomgraph.protocols.shown_text import DISGUISING, shown_escape
from loomgraph.serve.auth import Caller
from loomgraph.serve.bodies import limited
from loomgraph.serve.errors import BadRequest, ServeError
from loomgraph.serve.service import Service

__all__ = [
    "HERE",
    "Page",
    "PageFailed",
    "escape",
    "exact",
    "json_shown",
    "read_form",
    "render",
    "shown",
    "text_of",
]

HERE = Path(__file__).parent
# What disguises text, as the CLI escapes it (`protocols.shown_text`): a U+202E in a tool
# origin drew the approval card's digest right to left.
_DISGUISING = re.compile(f"[{DISGUISING}]")
# Shown as they are: tab and line ends are layout; NUL is `_UNSHOWN`'s.
_LAID_OUT = frozenset("\x00\t\n\r")
# Lone UTF-16 halves: a str may hold them (the Python API takes any str), UTF-8 cannot; and
# U+0000, which HTML does not show (the Python API takes it too).
_UNSHOWN = re.compile("[\x00\ud800-\udfff]")
# What a page's JSON writes as `\uNNNN`: `_DISGUISING` and lone UTF-16 halves (which UTF-8
# cannot carry: a page would show them as U+FFFD, and the arguments sent back would change).
_JSON_HIDDEN = re.compile(f"[{DISGUISING}\ud800-\udfff]")
# The viewer's forms are small (sign-in: key, user; an answer: allow, args, key; a fork: at):
# a form of more fields, or with a file, is not one of theirs.
FORM_FIELDS = 8

# A page of the viewer: the request, the service, the signed-in caller.
Page = Callable[[Request, Service, Caller], Awaitable[Response]]


def shown(text: str) -> str:
    """`text` as a page shows it: each `_DISGUISING` character as its escape (`\\u202e`)."""
    return _DISGUISING.sub(lambda m: m[0] if m[0] in _LAID_OUT else shown_escape(m[0]), text)


def _finalize(value: Any) -> Any:
    # Every `{{ }}` of every page: its text `shown`, whoever chose it (the run, a model, a
    # tool, a server), a list's or a dict's too. Markup is the page's own (`exact`, `safe`)
    # and left as it is, and so are numbers and nothing.
    if hasattr(value, "__html__") or value is None or isinstance(value, int | float | Undefined):
        return value
    return shown(str(value))


def exact(value: Any) -> Markup:
    """`value` escaped as HTML only, not `shown`: for a form's field the page sends back as
    it is (a request's key, which holds the model's call id)."""
    return Markup.escape(value)


def json_shown(value: Any, **options: Any) -> str:
    """`value` as JSON a page shows: letters of any script as written ("Müller 東京", not
    `\\u00fc` escapes), each disguising character and lone surrogate as JSON's own escape
    (`\\u202e`). Still JSON, and the same value: the approval card's arguments, sent back
    as they are (`exact`), read as the call's."""
    text = json.dumps(value, ensure_ascii=False, default=str, **options)
    # Only inside strings can these be (JSON's own text is ASCII), where `\\uNNNN` is the
    # character itself to a JSON reader; `shown` then has nothing left to escape (it would
    # write C1 controls as `\\x85`, which JSON does not read) but is kept as the rule.
    return shown(_JSON_HIDDEN.sub(_json_escape, text))


def _json_escape(match: re.Match[str]) -> str:
    # A line end outside a string is the indent's layout (`json.dumps` escapes those within).
    char = match[0]
    return char if char == "\n" else f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """`text` escaped for HTML written outside a template (an error notice)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
TEMPLATES.env.finalize = _finalize
TEMPLATES.env.filters["pretty"] = lambda v: json_shown(v, indent=2, sort_keys=True)
TEMPLATES.env.filters["compact"] = lambda v: json_shown(v)[:160]
TEMPLATES.env.filters["exact"] = exact
# A URL path segment from text (a run id): every reserved character percent-encoded.
TEMPLATES.env.filters["segment"] = lambda v: quote(str(v), safe="")
TEMPLATES.env.filters["utc"] = lambda ts: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


class PageFailed(ServeError):
    """A page could not be rendered: the server's fault, whatever the exception says."""

    status = 500
    kind = "internal"


def text_of(html: str) -> str:
    """`html` as UTF-8 and a page can carry it: each lone surrogate and NUL shown as U+FFFD."""
    return _UNSHOWN.sub("\ufffd", html)


async def read_form(request: Request, service: Service) -> FormData:
    """The request's form, read within the server's body limit (`api.limited`: TooLarge while
    reading), of at most FORM_FIELDS fields and no file (BadRequest)."""
    try:
        return await limited(request, service.max_body).form(
            max_files=0, max_fields=FORM_FIELDS, max_part_size=service.max_body
        )
    except HTTPException as err:  # what Starlette makes of a form over its limits
        raise BadRequest(f"the form is refused: {err.detail}") from None
    except MultiPartException as err:
        raise BadRequest(f"the form is refused: {err.message}") from None


def render(request: Request, name: str, http_status: int = 200, **context: Any) -> Response:
    """The template `name` rendered with `context`, as an HTML response (PageFailed)."""
    # (not `status`: a page's context has a `status` of its own, the filter)
    try:
        html = TEMPLATES.get_template(name).render({"request": request, **context})
    except Exception as err:  # (its text is for the server's log: `internal_message`)
        raise PageFailed("the page could not be rendered") from err
    return HTMLResponse(text_of(html), status_code=http_status)
