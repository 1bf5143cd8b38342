"""Tools the agent can call: built-ins plus company tools declared in config as `module:function`.

Each tool is described to the model by the JSON schema llama-index's FunctionTool derives from the function's
type hints and docstring; arguments are validated against that schema before the function runs.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import importlib
import inspect
import json
import logging
import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from core.config import ToolSettings
from core.types import Source

__all__ = ["CALLS_FOR", "Tool", "ToolError", "ToolOutput", "build_tools", "calculator", "current_time", "make_tool",
           "tools_called_for",
           "parse_allowlist"]

logger = logging.getLogger(__name__)

BUILTIN_TOOLS = ("calculator", "current_time", "search_docs", "http_get")
# Marks an external tool result when the asking channel is unknown: restricted, readable by no audience.
UNKNOWN_AUDIENCE = "(unknown channel)"


class ToolError(Exception):
    """A tool failed in a way the model should hear about (returned to it as the observation)."""


@dataclass(frozen=True)
class ToolOutput:
    """A tool's text for the model and the sources it was read from (they go on the reply, so an answer that
    saw restricted text is recorded as restricted). A tool function may return one to declare its sources
    itself; a company tool returning a plain string is treated as reading something Kaizen cannot see the
    access of (see `Tool.reads`)."""

    text: str
    sources: tuple[Source, ...] = ()


# What a tool's text comes from: "computed" (nothing is read: calculator, clock), "documents" (the tool returns
# ToolOutput with the retrieved excerpts), "external" (a network or company system: its text is recorded as a
# source readable only by the channel that asked).
Reads = str


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments
    fn: Callable[..., Any]
    schema: Any  # the pydantic model that validates arguments
    timeout_s: float = 10.0
    reads: Reads = "external"
    # The identity of the channel asking (core.types.Turn.audience): who may read what an external tool returned.
    audience: str = ""
    # Copy candidates: values of the first required argument that the question states verbatim (e.g. "98 + 57"
    # for the calculator). The agent's constrained decoding then chooses among them instead of re-typing them.
    spans: Callable[[str], list[str]] | None = None

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """Arguments checked and coerced against the schema; ToolError names what is wrong."""
        try:
            return self.schema.model_validate(args).model_dump()
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'arguments'}: {x['msg']}" for x in e.errors())
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from None

    async def run(self, args: dict[str, Any]) -> ToolOutput:
        """Run with validated args under the tool's timeout: the text for the model and its sources.
        Raises ToolError (bad arguments, time-out, or the tool's own)."""
        valid = self.validate(args)
        if inspect.iscoroutinefunction(self.fn):
            coro = self.fn(**valid)
        else:
            coro = asyncio.to_thread(self.fn, **valid)
        try:
            result = await asyncio.wait_for(coro, self.timeout_s)
        except TimeoutError:
            raise ToolError(f"{self.name} timed out after {self.timeout_s:g} s") from None
        if isinstance(result, ToolOutput):
            return result
        text = result if isinstance(result, str) else str(result)
        if self.reads != "external":
            return ToolOutput(text)
        return ToolOutput(text, (self._external_source(valid, text),))

    async def __call__(self, args: dict[str, Any]) -> str:
        """Run with validated args under the tool's timeout; the result as text for the model."""
        return (await self.run(args)).text

    def _external_source(self, args: dict[str, Any], text: str) -> Source:
        key = json.dumps(args, sort_keys=True, default=str, ensure_ascii=False)
        url = str(args.get("url", "")) if self.name == "http_get" else ""
        return Source(
            id=f"{self.name}:{hashlib.sha256(key.encode()).hexdigest()[:16]}", text=text[:2000],
            title=url or self.name, uri=url, source=f"tool:{self.name}",
            # Kaizen cannot know who may read what a network or company system returned: only where it was asked.
            channels=(self.audience or UNKNOWN_AUDIENCE,), metadata={"tool": self.name, "arguments": key[:500]},
        )

    def spec(self) -> dict[str, Any]:
        """OpenAI-style function description (also what chat templates with tools accept)."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def make_tool(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
              timeout_s: float = 10.0, reads: Reads = "external", audience: str = "",
              spans: Callable[[str], list[str]] | None = None) -> Tool:
    """A Tool from a typed, documented function; `reads`, `audience` and `spans` as on `Tool`."""
    from llama_index.core.tools import FunctionTool

    ft = FunctionTool.from_defaults(fn=fn, name=name, description=description)
    meta = ft.metadata
    doc = description or (inspect.getdoc(fn) or "").split("\n\n")[0]
    return Tool(name=meta.get_name(), description=doc, parameters=meta.get_parameters_dict(), fn=fn,
                schema=meta.fn_schema, timeout_s=timeout_s, reads=reads, audience=audience, spans=spans)


# --- calculator: arithmetic parsed with `ast`, never eval ------------------------------------------------
# Every operation's cost is bounded *before* it runs: big-integer work holds the interpreter (a time-out
# cannot interrupt it), so an integer result may have at most MAX_BITS bits, estimated from the operands.

MAX_BITS = 4096  # about 1233 decimal digits: more than any answer needs, microseconds to compute
MAX_ROUND_DIGITS = 100
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {"sqrt": math.sqrt, "abs": abs, "round": round, "log": math.log, "exp": math.exp, "sin": math.sin,
          "cos": math.cos, "tan": math.tan, "floor": math.floor, "ceil": math.ceil, "min": min, "max": max}
# Functions that take several arguments: inside their parentheses a comma separates arguments.
_MULTI_ARG = {"round", "log", "min", "max"}
_CONSTS = {"pi": math.pi, "e": math.e}
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?![\d,])")


def _bits(value: float | int) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _check_cost(op: ast.operator, a: float | int, b: float | int) -> None:
    """Refuse an operation whose exact integer result would exceed MAX_BITS (floats overflow by themselves)."""
    if not (isinstance(a, int) and isinstance(b, int)):
        return
    if isinstance(op, ast.Pow):
        if b < 0 or abs(a) <= 1:
            return
        if b > MAX_BITS or (_bits(a) - 1) * b > MAX_BITS:
            raise ToolError(f"result too large (more than {MAX_BITS} bits)")
    elif isinstance(op, ast.Mult) and _bits(a) + _bits(b) > MAX_BITS + 1:
        raise ToolError(f"result too large (more than {MAX_BITS} bits)")


def _call(fn: str, args: list[float | int]) -> float | int:
    if fn == "round" and len(args) == 2 and isinstance(args[1], int) and abs(args[1]) > MAX_ROUND_DIGITS:
        raise ToolError(f"round: at most {MAX_ROUND_DIGITS} digits")
    if fn == "round" and len(args) == 2 and not isinstance(args[1], int):
        raise ToolError("round: the number of digits must be a whole number")
    try:
        return _FUNCS[fn](*args)
    except TypeError as e:
        raise ToolError(f"{fn}: {e}") from None


def _eval(node: ast.AST) -> float | int:
    match node:
        case ast.Expression(body=body):
            return _eval(body)
        case ast.Constant(value=v) if isinstance(v, int | float) and not isinstance(v, bool):
            return v
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINOPS:
            a, b = _eval(left), _eval(right)
            _check_cost(op, a, b)
            return _BINOPS[type(op)](a, b)
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            return _UNARY[type(op)](_eval(operand))
        case ast.Call(func=ast.Name(id=fn), args=args, keywords=[]) if fn in _FUNCS:
            return _call(fn, [_eval(a) for a in args])
        case ast.Name(id=name) if name in _CONSTS:
            return _CONSTS[name]
        case ast.Tuple():
            raise ToolError("a comma outside a function's arguments: write numbers without digit grouping, "
                            "e.g. 1000 rather than 1,000 where it could be read two ways")
    raise ToolError(f"unsupported expression element: {ast.dump(node)[:60]}")


def _commas(text: str) -> str:
    """Digit-grouping commas removed where unambiguous; argument commas kept.

    Inside the parentheses of a function taking several arguments (round, log, min, max) every comma
    separates arguments: `round(2.567,2)` is round(2.567, 2). Elsewhere a comma can only be digit grouping,
    so `1,000,000 * 2` and `sqrt(1,000,000)` are read as grouped numbers."""
    out: list[str] = []
    stack: list[bool] = []  # per open parenthesis: are its commas argument separators?
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            name = re.search(r"([A-Za-z_]\w*)\s*$", "".join(out))
            stack.append(bool(name and name.group(1) in _MULTI_ARG))
        elif ch == ")" and stack:
            stack.pop()
        elif ch.isdigit() and not (stack and stack[-1]) and (i == 0 or not (text[i - 1].isalnum()
                                                                            or text[i - 1] in "._")):
            if m := _GROUPED.match(text, i):
                out.append(m.group().replace(",", ""))
                i = m.end()
                continue
        out.append(ch)
        i += 1
    return "".join(out)


# What makes a question call for a computed tool: `auto` sends such questions to the agent, and the agent's first
# action is chosen among the tools they name. bench/agent.py, 135M model: left to the model, the choice between
# calculator and current_time is a near-tie (logits within 0.25) that flips with batching and bf16, and in a
# batched run (bench/quality.py) at least 5 of 16 arithmetic questions went to the clock.
CALLS_FOR = {
    "calculator": re.compile(r"\d\s*[-+*/×÷^%x]\s*\d|\d\s*(times|divided by|multiplied by|plus|minus)\s*\d"
                             r"|\b(calculate|compute|square root|sqrt|percent of)\b", re.IGNORECASE),
    "current_time": re.compile(r"\b(what time|time is it|today|today's|date|weekday|day of the week|tomorrow|"
                               r"yesterday|(year|month) (is it|are we)|(year|month) is it|current (date|time|year|"
                               r"month|day))\b", re.IGNORECASE),  # not "which year" alone: "which year was X built?"
}


def tools_called_for(question: str, enabled: Iterable[str]) -> list[str]:
    """The enabled tools among CALLS_FOR whose pattern `question` matches, in CALLS_FOR's order."""
    names = set(enabled)
    return [name for name, pattern in CALLS_FOR.items() if name in names and pattern.search(question)]


_NUMBER = r"\(?\s*\d+(?:\.\d+)?\s*\)?"
_EXPRESSION = re.compile(rf"{_NUMBER}(?:\s*[-+*/×÷^]\s*{_NUMBER})+")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def arithmetic_spans(question: str) -> list[str]:
    """The arithmetic expressions written out in `question` ("What is 98 + 57?" -> ["98 + 57"]), in order,
    without ISO dates. The 135M model re-typing them as calculator arguments got 4 of 16 of bench/agent.py's
    arithmetic questions wrong ("98 + 57" became "98 + 47"); choosing among these spans cannot."""
    found = []
    for m in _EXPRESSION.finditer(question):
        span = m.group(0).strip()
        if span.count("(") != span.count(")"):
            span = span.strip("()").strip()
        if not _ISO_DATE.match(span) and span not in found:
            found.append(span)
    return found


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as "17 * 23" or "sqrt(2) + 3^2".

    Functions: sqrt abs round log exp sin cos tan floor ceil min max; `round(2.567, 2)`, `log(8, 2)`.
    Raises ToolError for anything else, and before any integer result above MAX_BITS bits is computed.

    Args:
        expression: the arithmetic expression to evaluate
    """
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/").strip()
    if not text:
        raise ToolError("empty expression")
    if len(text) > 200:
        raise ToolError("expression too long")
    text = _commas(text)
    if re.search(r"(?<![\w.])0\d", text):
        raise ToolError(f"ambiguous number in {expression!r}: write numbers without leading zeros or grouping")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    try:
        value = _eval(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except RecursionError:
        raise ToolError("expression nested too deeply") from None
    except (OverflowError, ValueError) as e:
        raise ToolError(f"cannot compute: {e}") from None
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        raise ToolError("the result is not a finite real number")
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ToolError(f"result too large (more than {MAX_BITS} bits)")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(round(value, 10) if isinstance(value, float) else value)


def current_time(timezone: str = "UTC") -> str:
    """The current date and time, e.g. for questions about today's date or the weekday.

    Args:
        timezone: IANA time zone name such as "UTC" or "Europe/Paris"
    """
    try:
        tz = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}; use an IANA name like Europe/Paris") from None
    now = datetime.now(tz)
    # Weekday and month by name as well as the ISO date: "which month are we in?" is answered by a name.
    return now.strftime(f"%A {now.day} %B %Y (%Y-%m-%d) %H:%M:%S {timezone or 'UTC'}")


DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_allowlist(entries: list[str]) -> set[tuple[str, int | None]]:
    """`http_allowlist` entries as (host, port): "wiki.internal" (ports 80 and 443 only, shown as None) or
    "wiki.internal:8080" (that port only); "[fd00::1]:8443" for IPv6. Raises ValueError naming a bad entry."""
    allowed: set[tuple[str, int | None]] = set()
    for entry in entries:
        raw = entry.strip()
        try:
            parts = urlsplit(raw if "//" in raw else "//" + raw)
            port = parts.port
        except ValueError:
            parts, port = None, None
        host = (parts.hostname or "").rstrip(".") if parts else ""
        if not host or (parts and (parts.path not in ("", "/") or parts.username or parts.query)):
            raise ValueError(f"tools.http_allowlist: {entry!r} is not a host or host:port (e.g. wiki.internal:8080)")
        allowed.add((host.lower(), port))
    return allowed


def _http_get_tool(cfg: ToolSettings) -> Callable[..., Any]:
    allowed = parse_allowlist(cfg.http_allowlist)

    async def http_get(url: str) -> str:
        """Fetch a web page from an allowed internal host and return its text.

        Args:
            url: the http(s) URL to fetch
        """
        import httpx

        parts = urlsplit(url.strip())
        if parts.scheme not in DEFAULT_PORTS:
            raise ToolError("only http and https URLs can be fetched")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ToolError("the URL's port is not a number between 0 and 65535") from None
        host = (parts.hostname or "").rstrip(".").lower()
        if (host, port) not in allowed and not ((host, None) in allowed and port in DEFAULT_PORTS.values()):
            shown = f"{host}:{port}" if port not in DEFAULT_PORTS.values() else host
            raise ToolError(f"{shown!r} is not on the allowlist")
        async with httpx.AsyncClient(timeout=cfg.http_timeout_s, follow_redirects=False) as client:
            try:
                async with client.stream("GET", url.strip()) as r:
                    body = b""
                    async for chunk in r.aiter_bytes():
                        body += chunk
                        if len(body) > cfg.http_max_bytes:
                            body = body[: cfg.http_max_bytes]
                            break
            except httpx.HTTPError as e:
                raise ToolError(f"fetch failed: {e}") from None
        return f"HTTP {r.status_code}\n" + body.decode("utf-8", errors="replace")

    return http_get


_SEARCH_PREAMBLE = re.compile(
    r"(?i)^\s*(?:please\s+)?(?:search|look\s+up|find|check)(?:\s+(?:in|for|through))?(?:\s+the)?(?:\s+company)?"
    r"\s+(?:docs|documents|documentation|handbook|wiki)\b(?:\s+(?:for|about))?\s*[:,-]?\s*")


def question_query(question: str) -> list[str]:
    """The search_docs query a question itself makes: the question, less a leading "Search the docs:"-style
    request. The retriever's hybrid search is built for whole questions, while the 135M model's own query for
    "what does error E-4471 mean?" found only an unrelated notice (tests/test_engine_rag.py)."""
    query = _SEARCH_PREAMBLE.sub("", question).strip()
    return [query or question.strip()] if question.strip() else []


def _search_docs_tool(retriever: Any, channel: Any, k: int) -> Callable[..., Any]:
    async def search_docs(query: str) -> ToolOutput:
        """Search the company documents this channel may read and return the most relevant excerpts.

        Args:
            query: what to look for
        """
        sources: list[Source] = await retriever.retrieve(query, channel=channel, k=k)
        if not sources:
            return ToolOutput("No matching documents.")
        # Paths below the ingested folder, never the server's absolute path.
        blocks = [f"[{i}] {s.title or _shown_path(s)} ({_shown_path(s)})\n{s.text}" for i, s in enumerate(sources, 1)]
        return ToolOutput("\n\n".join(blocks), tuple(sources))

    return search_docs


def _shown_path(source: Source) -> str:
    """Where an excerpt comes from, as users may see it: the path below the ingested folder, or a URL."""
    path = source.metadata.get("path") or ""
    if path:
        return path
    if re.match(r"https?://", source.uri or ""):
        return source.uri
    return (source.uri or "").replace("\\", "/").rsplit("/", 1)[-1] or source.source or "document"


def _import_tool(spec: str) -> Callable[..., Any]:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"tool {spec!r} must be written as module:function")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import tool {spec!r}: {e}") from None
    if not callable(fn):
        raise ValueError(f"tool {spec!r} is not callable")
    return fn


def build_tools(cfg: ToolSettings, enabled: list[str], *, retriever: Any = None, channel: Any = "",
                k: int = 4, audience: str = "") -> dict[str, Tool]:
    """The tools enabled for one channel, by name. Unknown names are an error listing the available ones.

    `channel` is what search_docs passes to the retriever (the asking channel's identity); `audience` (default:
    `channel` when it is a string) is recorded on what http_get and company tools return."""
    custom = {name: spec for name, spec in cfg.custom.items()}
    available = [t for t in BUILTIN_TOOLS if t != "search_docs" or retriever is not None] + list(custom)
    audience = audience or (channel if isinstance(channel, str) else "")
    tools: dict[str, Tool] = {}
    for name in enabled:
        match name:
            case "calculator":
                tools[name] = make_tool(calculator, timeout_s=cfg.timeout_s, reads="computed",
                                        spans=arithmetic_spans)
            case "current_time":
                tools[name] = make_tool(current_time, timeout_s=cfg.timeout_s, reads="computed")
            case "search_docs" if retriever is not None:
                tools[name] = make_tool(_search_docs_tool(retriever, channel, k), timeout_s=cfg.timeout_s,
                                        reads="documents", spans=question_query)
            case "http_get":
                tools[name] = make_tool(_http_get_tool(cfg), timeout_s=cfg.timeout_s, audience=audience)
            case _ if name in custom:
                tools[name] = make_tool(_import_tool(custom[name]), name=name, timeout_s=cfg.timeout_s,
                                        audience=audience)
            case "search_docs":
                continue  # no documents ingested yet: the tool is simply not offered
            case _:
                raise ValueError(f"unknown tool {name!r}; available tools: {', '.join(available)}")
    return tools
