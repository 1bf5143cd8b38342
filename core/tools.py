"""Tools the agent can call: built-ins plus company tools declared in config as `module:function`.

Each tool is described to the model by the JSON schema llama-index's FunctionTool derives from the function's
type hints and docstring; arguments are validated against that schema before the function runs.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import logging
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from core.config import ToolSettings
from core.types import Source

__all__ = ["Tool", "ToolError", "build_tools", "calculator", "current_time", "make_tool"]

logger = logging.getLogger(__name__)

BUILTIN_TOOLS = ("calculator", "current_time", "search_docs", "http_get")


class ToolError(Exception):
    """A tool failed in a way the model should hear about (returned to it as the observation)."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments
    fn: Callable[..., Any]
    schema: Any  # the pydantic model that validates arguments
    timeout_s: float = 10.0

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """Arguments checked and coerced against the schema; ToolError names what is wrong."""
        try:
            return self.schema.model_validate(args).model_dump()
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'arguments'}: {x['msg']}" for x in e.errors())
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from None

    async def __call__(self, args: dict[str, Any]) -> str:
        """Run with validated args under the tool's timeout; the result as text for the model."""
        valid = self.validate(args)
        if inspect.iscoroutinefunction(self.fn):
            coro = self.fn(**valid)
        else:
            coro = asyncio.to_thread(self.fn, **valid)
        try:
            result = await asyncio.wait_for(coro, self.timeout_s)
        except TimeoutError:
            raise ToolError(f"{self.name} timed out after {self.timeout_s:g} s") from None
        return result if isinstance(result, str) else str(result)

    def spec(self) -> dict[str, Any]:
        """OpenAI-style function description (also what chat templates with tools accept)."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def make_tool(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
              timeout_s: float = 10.0) -> Tool:
    from llama_index.core.tools import FunctionTool

    ft = FunctionTool.from_defaults(fn=fn, name=name, description=description)
    meta = ft.metadata
    doc = description or (inspect.getdoc(fn) or "").split("\n\n")[0]
    return Tool(name=meta.get_name(), description=doc, parameters=meta.get_parameters_dict(), fn=fn,
                schema=meta.fn_schema, timeout_s=timeout_s)


# --- calculator: arithmetic parsed with `ast`, never eval ------------------------------------------------

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {"sqrt": math.sqrt, "abs": abs, "round": round, "log": math.log, "exp": math.exp, "sin": math.sin,
          "cos": math.cos, "tan": math.tan, "floor": math.floor, "ceil": math.ceil, "min": min, "max": max}
_CONSTS = {"pi": math.pi, "e": math.e}


def _eval(node: ast.AST) -> float | int:
    match node:
        case ast.Expression(body=body):
            return _eval(body)
        case ast.Constant(value=v) if isinstance(v, int | float) and not isinstance(v, bool):
            return v
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINOPS:
            a, b = _eval(left), _eval(right)
            if isinstance(op, ast.Pow) and abs(b) > 1000:
                raise ToolError("exponent too large")
            return _BINOPS[type(op)](a, b)
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            return _UNARY[type(op)](_eval(operand))
        case ast.Call(func=ast.Name(id=fn), args=args, keywords=[]) if fn in _FUNCS:
            return _FUNCS[fn](*[_eval(a) for a in args])
        case ast.Name(id=name) if name in _CONSTS:
            return _CONSTS[name]
    raise ToolError(f"unsupported expression element: {ast.dump(node)[:60]}")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as "17 * 23" or "sqrt(2) + 3^2".

    Args:
        expression: the arithmetic expression to evaluate
    """
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/").replace(",", "").strip()
    if not text:
        raise ToolError("empty expression")
    if len(text) > 200:
        raise ToolError("expression too long")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    try:
        value = _eval(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (OverflowError, ValueError) as e:
        raise ToolError(f"cannot compute: {e}") from None
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
    return now.strftime(f"%A %Y-%m-%d %H:%M:%S {timezone or 'UTC'}")


def _http_get_tool(cfg: ToolSettings) -> Callable[..., Any]:
    async def http_get(url: str) -> str:
        """Fetch a web page from an allowed internal host and return its text.

        Args:
            url: the http(s) URL to fetch
        """
        import httpx

        host = urlparse(url).hostname or ""
        if urlparse(url).scheme not in ("http", "https"):
            raise ToolError("only http and https URLs can be fetched")
        if host not in cfg.http_allowlist:
            raise ToolError(f"host {host!r} is not on the allowlist")
        async with httpx.AsyncClient(timeout=cfg.http_timeout_s, follow_redirects=False) as client:
            try:
                async with client.stream("GET", url) as r:
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


def _search_docs_tool(retriever: Any, channel: Any, k: int) -> Callable[..., Any]:
    async def search_docs(query: str) -> str:
        """Search the company documents this channel may read and return the most relevant excerpts.

        Args:
            query: what to look for
        """
        sources: list[Source] = await retriever.retrieve(query, channel=channel, k=k)
        if not sources:
            return "No matching documents."
        return "\n\n".join(f"[{i}] {s.title} ({s.uri})\n{s.text}" for i, s in enumerate(sources, 1))

    return search_docs


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
                k: int = 4) -> dict[str, Tool]:
    """The tools enabled for one channel, by name. Unknown names are an error listing the available ones."""
    custom = {name: spec for name, spec in cfg.custom.items()}
    available = [t for t in BUILTIN_TOOLS if t != "search_docs" or retriever is not None] + list(custom)
    tools: dict[str, Tool] = {}
    for name in enabled:
        match name:
            case "calculator":
                tools[name] = make_tool(calculator, timeout_s=cfg.timeout_s)
            case "current_time":
                tools[name] = make_tool(current_time, timeout_s=cfg.timeout_s)
            case "search_docs" if retriever is not None:
                tools[name] = make_tool(_search_docs_tool(retriever, channel, k), timeout_s=cfg.timeout_s)
            case "http_get":
                tools[name] = make_tool(_http_get_tool(cfg), timeout_s=cfg.timeout_s)
            case _ if name in custom:
                tools[name] = make_tool(_import_tool(custom[name]), name=name, timeout_s=cfg.timeout_s)
            case "search_docs":
                continue  # no documents ingested yet: the tool is simply not offered
            case _:
                raise ValueError(f"unknown tool {name!r}; available tools: {', '.join(available)}")
    return tools
