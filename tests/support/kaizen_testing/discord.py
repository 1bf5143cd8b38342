"""A fake Discord on 127.0.0.1: the gateway (websocket, plain-text JSON frames) and the REST API (aiohttp),
with every payload builder the tests need in this one module.

The real discord.py client connects to it unchanged: point `discord.http.Route.BASE` at `api_url` and
`DiscordWebSocket.DEFAULT_GATEWAY` at `gateway_url` (the front end's `discord_endpoints` does both from
settings). The fake keeps every channel, thread and message, records every REST call in `calls`, and lets a
test play a user: `say()` posts a message, `react()` adds or removes a reaction, `slash()` and `click()` send
interactions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

__all__ = [
    "APP_ID", "BOT_ID", "BOT_ROLE_ID", "CHANNEL_ID", "GUILD_ID", "MESSAGE_CONTENT", "OTHER_BOT_ID", "USER_ID",
    "Call", "FakeDiscord", "attachment_payload", "channel_payload", "guild_payload", "interaction_payload",
    "member_payload", "message_payload", "reaction_payload", "ready_payload", "role_payload",
    "thread_payload", "user_payload",
]

TS = "2026-01-01T00:00:00.000000+00:00"
APP_ID = 1_000_000_000_000_000_001
BOT_ID = APP_ID  # a bot user has its application's id
GUILD_ID = 1_000_000_000_000_000_100
BOT_ROLE_ID = 1_000_000_000_000_000_101
CHANNEL_ID = 1_000_000_000_000_000_200  # #general
USER_ID = 1_000_000_000_000_000_300
OTHER_BOT_ID = 1_000_000_000_000_000_400
EPHEMERAL = 64
MESSAGE_CONTENT = 1 << 15  # the privileged intent


# -- payload builders -------------------------------------------------------------------------------------


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": name, "global_name": name, "discriminator": "0", "avatar": None,
            "bot": bot, "public_flags": 0, "flags": 0}


def member_payload(user: dict[str, Any], *, roles: tuple[int, ...] = ()) -> dict[str, Any]:
    # discord.py reads `flags` unconditionally.
    return {"user": user, "roles": [str(r) for r in roles], "joined_at": TS, "deaf": False, "mute": False,
            "flags": 0, "pending": False, "nick": None, "permissions": "2248473465835073"}


def role_payload(role_id: int, name: str, *, bot_id: int | None = None) -> dict[str, Any]:
    role = {"id": str(role_id), "name": name, "color": 0, "hoist": False,
            "position": 0 if bot_id is None else 1, "permissions": "2248473465835073",
            "managed": bot_id is not None, "mentionable": False, "flags": 0}
    if bot_id is not None:
        role["tags"] = {"bot_id": str(bot_id)}
    return role


def channel_payload(channel_id: int, name: str, *, guild_id: int | None = GUILD_ID, kind: int = 0,
                    recipient: dict[str, Any] | None = None) -> dict[str, Any]:
    """A guild text channel (kind 0), or a DM (kind 1, with `recipient`)."""
    if kind == 1:
        return {"id": str(channel_id), "type": 1, "recipients": [recipient], "last_message_id": None}
    return {"id": str(channel_id), "type": kind, "guild_id": str(guild_id), "name": name, "position": 0,
            "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None,
            "last_message_id": None, "rate_limit_per_user": 0, "flags": 0}


def thread_payload(thread_id: int, name: str, *, parent_id: int, owner_id: int,
                   guild_id: int = GUILD_ID) -> dict[str, Any]:
    return {"id": str(thread_id), "type": 11, "guild_id": str(guild_id), "parent_id": str(parent_id),
            "owner_id": str(owner_id), "name": name, "last_message_id": None, "rate_limit_per_user": 0,
            "message_count": 0, "member_count": 1, "flags": 0, "total_message_sent": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": TS,
                                "locked": False}}


def guild_payload(*, channels: list[dict[str, Any]], members: list[dict[str, Any]],
                  guild_id: int = GUILD_ID, name: str = "Acme") -> dict[str, Any]:
    return {
        "id": str(guild_id), "name": name, "icon": None, "owner_id": str(USER_ID), "unavailable": False,
        "roles": [role_payload(guild_id, "@everyone"), role_payload(BOT_ROLE_ID, "Kaizen", bot_id=BOT_ID)],
        "emojis": [], "stickers": [], "features": [], "channels": channels, "threads": [], "members": members,
        "member_count": len(members), "large": False, "joined_at": TS, "verification_level": 0,
        "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "premium_tier": 0,
        "preferred_locale": "en-US", "system_channel_flags": 0, "nsfw_level": 0, "voice_states": [],
        "presences": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
    }


def attachment_payload(attachment_id: int, filename: str = "screenshot.png") -> dict[str, Any]:
    url = f"https://cdn.example/{attachment_id}/{filename}"
    return {"id": str(attachment_id), "filename": filename, "size": 1024, "url": url, "proxy_url": url,
            "content_type": "image/png"}


def message_payload(message_id: int, channel_id: int, author: dict[str, Any], content: str, *,
                    guild_id: int | None = GUILD_ID, mentions: tuple[dict[str, Any], ...] = (),
                    mention_roles: tuple[int, ...] = (), attachments: tuple[dict[str, Any], ...] = (),
                    referenced: dict[str, Any] | None = None, kind: int = 0, embeds: list[Any] | None = None,
                    components: list[Any] | None = None, flags: int = 0,
                    webhook_id: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(message_id), "channel_id": str(channel_id), "author": author, "content": content,
        "timestamp": TS, "edited_timestamp": None, "tts": False, "mention_everyone": False,
        "mentions": list(mentions), "mention_roles": [str(r) for r in mention_roles],
        "attachments": list(attachments), "embeds": embeds or [], "components": components or [],
        "pinned": False, "type": 19 if referenced is not None and kind == 0 else kind, "flags": flags,
    }
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
        data["member"] = {k: v for k, v in member_payload(author).items() if k != "user"}
    if referenced is not None:
        data["message_reference"] = {"type": 0, "message_id": referenced["id"], "channel_id": str(channel_id),
                                     **({"guild_id": str(guild_id)} if guild_id else {})}
        data["referenced_message"] = {k: v for k, v in referenced.items() if k != "referenced_message"}
    if webhook_id is not None:
        data["webhook_id"] = str(webhook_id)
    return data


def reaction_payload(message: dict[str, Any], user: dict[str, Any], emoji: str, *,
                     added: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"user_id": user["id"], "channel_id": message["channel_id"],
                            "message_id": message["id"], "emoji": {"id": None, "name": emoji}, "burst": False,
                            "type": 0}
    if "guild_id" in message:
        data["guild_id"] = message["guild_id"]
        if added:  # Discord sends the member only with additions
            data["member"] = member_payload(user)
            data["message_author_id"] = message["author"]["id"]
    return data


def interaction_payload(interaction_id: int, token: str, *, kind: int, data: dict[str, Any],
                        channel: dict[str, Any], user: dict[str, Any],
                        message: dict[str, Any] | None = None) -> dict[str, Any]:
    """An INTERACTION_CREATE: kind 2 = application command, 3 = component (button)."""
    payload: dict[str, Any] = {
        "id": str(interaction_id), "application_id": str(APP_ID), "type": kind, "data": data, "token": token,
        "version": 1, "channel_id": channel["id"], "channel": channel, "locale": "en-US",
        "app_permissions": "0", "entitlements": [], "authorizing_integration_owners": {"0": str(GUILD_ID)},
        "context": 0, "attachment_size_limit": 8_388_608,
    }
    if "guild_id" in channel:
        payload["guild_id"] = channel["guild_id"]
        payload["guild_locale"] = "en-US"
        payload["member"] = member_payload(user)
    else:
        payload["user"] = user
        payload["context"] = 1
    if message is not None:
        payload["message"] = message
    return payload


def ready_payload(*, gateway_url: str, shard: list[int] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "v": 10, "user": user_payload(BOT_ID, "Kaizen", bot=True), "guilds": [{"id": str(GUILD_ID),
                                                                              "unavailable": True}],
        "session_id": "fake-session", "resume_gateway_url": gateway_url, "private_channels": [],
        "relationships": [], "presences": [], "application": {"id": str(APP_ID), "flags": 0},
    }
    if shard is not None:
        data["shard"] = shard
    return data


def app_info_payload() -> dict[str, Any]:
    return {"id": str(APP_ID), "name": "Kaizen", "description": "", "icon": None, "bot_public": True,
            "bot_require_code_grant": False, "owner": user_payload(USER_ID, "owner"), "verify_key": "00",
            "flags": 0, "team": None, "summary": ""}


# -- the fake ------------------------------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str  # without the /api/v10 prefix
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when the fake received it


class FakeDiscord:
    """Start with `await FakeDiscord().start()`; `close()` when done."""

    def __init__(self) -> None:
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self.bot = user_payload(BOT_ID, "Kaizen", bot=True)
        self.user = user_payload(USER_ID, "alice")
        self.other_bot = user_payload(OTHER_BOT_ID, "otherbot", bot=True)
        self.channels: dict[str, dict[str, Any]] = {str(CHANNEL_ID): channel_payload(CHANNEL_ID, "general")}
        self.messages: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.calls: list[Call] = []
        self.identified: list[dict[str, Any]] = []  # IDENTIFY payloads received
        self.commands: list[dict[str, Any]] = []  # the last synced application commands
        self._interactions: dict[str, dict[str, Any]] = {}  # token -> {"channel_id", "original"}
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Discord echoes the bot's own messages over the gateway (so the client caches them); off = uncached.
        self.echo_bot_messages = True
        self.token = "fake-token"  # any other token gets 401
        self.allow_message_content = True  # False: the app lacks the privileged intent (close code 4014)
        self.break_command_sync = False  # True: registering /ask gets an HTML error page instead of JSON

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def new_id(self) -> int:
        return next(self._ids)

    # -- playing a user ----------------------------------------------------------------------------------

    async def say(self, content: str, *, channel_id: int | str = CHANNEL_ID,
                  author: dict[str, Any] | None = None, mention_bot: bool = False, mention_role: bool = False,
                  reply_to: dict[str, Any] | None = None, attachments: tuple[dict[str, Any], ...] = (),
                  deleted: bool = False) -> dict[str, Any]:
        """A message from a user (alice by default) arrives; `deleted` = it is deleted before the bot acts."""
        channel = self.channels[str(channel_id)]
        author = author or self.user
        if mention_bot:
            content = f"<@{BOT_ID}> {content}".rstrip()
        if mention_role:
            content = f"<@&{BOT_ROLE_ID}> {content}".rstrip()
        msg = message_payload(self.new_id(), int(channel["id"]), author, content,
                              guild_id=int(channel["guild_id"]) if "guild_id" in channel else None,
                              mentions=(self.bot,) if mention_bot else (),
                              mention_roles=(BOT_ROLE_ID,) if mention_role else (),
                              attachments=attachments, referenced=reply_to)
        self.messages[msg["id"]] = msg
        if deleted:
            self.deleted.add(msg["id"])
        await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    def open_dm(self) -> str:
        channel_id = str(self.new_id())
        self.channels[channel_id] = channel_payload(int(channel_id), "", guild_id=None, kind=1,
                                                    recipient=self.user)
        return channel_id

    async def react(self, message: dict[str, Any], emoji: str, *, added: bool = True,
                    user: dict[str, Any] | None = None) -> None:
        event = "MESSAGE_REACTION_ADD" if added else "MESSAGE_REACTION_REMOVE"
        await self.dispatch(event, reaction_payload(message, user or self.user, emoji, added=added))

    async def slash(self, options: dict[str, Any], *, channel_id: int | str = CHANNEL_ID,
                    user: dict[str, Any] | None = None) -> str:
        """`/ask` with `options`; returns the interaction token (see `response()`)."""
        command = next(c for c in self.commands if c["name"] == "ask")
        data = {"id": command["id"], "name": "ask", "type": 1,
                "options": [{"name": k, "type": _option_type(v), "value": v} for k, v in options.items()]}
        return await self._interact(2, data, channel_id, user)

    async def click(self, message: dict[str, Any], custom_id: str, *,
                    user: dict[str, Any] | None = None) -> str:
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(3, data, message["channel_id"], user, message=message)

    async def _interact(self, kind: int, data: dict[str, Any], channel_id: int | str,
                        user: dict[str, Any] | None, message: dict[str, Any] | None = None) -> str:
        interaction_id, token = self.new_id(), f"token-{self.new_id()}"
        channel = self.channels[str(channel_id)]
        self._interactions[token] = {"channel_id": channel["id"], "original": None, "followups": [],
                                     "callbacks": []}
        payload = interaction_payload(interaction_id, token, kind=kind, data=data, channel=channel,
                                      user=user or self.user, message=message)
        await self.dispatch("INTERACTION_CREATE", payload)
        return token

    def response(self, token: str) -> dict[str, Any]:
        """{"original": message or None, "followups": [messages], "callbacks": [callback bodies]}."""
        state = self._interactions[token]
        original = self.messages.get(state["original"]) if state["original"] else None
        return {"original": original, "followups": [self.messages[i] for i in state["followups"]],
                "callbacks": state["callbacks"]}

    # -- looking at what the bot did ---------------------------------------------------------------------

    def bot_messages(self, channel_id: int | str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m["author"]["id"] == str(BOT_ID) and m["id"] not in
                self.deleted and (channel_id is None or m["channel_id"] == str(channel_id))]

    def threads(self) -> list[dict[str, Any]]:
        return [c for c in self.channels.values() if c["type"] == 11]

    def requests(self, method: str, prefix: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path.startswith(prefix)]

    async def wait_for(self, condition: Callable[[], Any], *, timeout: float = 120.0) -> Any:
        """Poll until `condition()` is truthy; returns its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = condition()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the fake Discord never saw the expected state")
            await asyncio.sleep(0.02)

    # -- gateway -----------------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        frame = json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data})
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(frame)  # plain-text JSON: discord.py only decompresses binary frames

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41_250}}))
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                break
            payload = json.loads(frame.data)
            match payload["op"]:
                case 1:  # heartbeat
                    await ws.send_str(json.dumps({"op": 11}))
                case 2:  # identify
                    self.identified.append(payload["d"])
                    if not self.allow_message_content and payload["d"]["intents"] & MESSAGE_CONTENT:
                        await ws.close(code=4014, message=b"Disallowed intent(s).")
                        break
                    shard = payload["d"].get("shard")
                    ready = ready_payload(gateway_url=self.gateway_url, shard=shard)
                    await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": next(self._seq), "d": ready}))
                    self._sockets.append(ws)
                    await self.dispatch("GUILD_CREATE", self._guild())
        if ws in self._sockets:
            self._sockets.remove(ws)
        return ws

    def _guild(self) -> dict[str, Any]:
        channels = [c for c in self.channels.values() if c["type"] == 0]
        members = [member_payload(self.bot, roles=(BOT_ROLE_ID,)), member_payload(self.user)]
        return guild_payload(channels=channels, members=members)

    # -- REST --------------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        self.calls.append(Call(request.method, path, body, dict(request.query)))
        if path.startswith("/users/") and request.headers.get("Authorization") != f"Bot {self.token}":
            return _error(401, 0, "401: Unauthorized")
        parts = path.strip("/").split("/")
        return self._route(request.method, parts, body or {}, dict(request.query))

    def _route(self, method: str, p: list[str], body: dict[str, Any], query: dict[str, str]) -> web.Response:
        match method, p:
            case "GET", ["users", "@me"]:
                return _json(self.bot)
            case "GET", ["oauth2", "applications", "@me"]:
                return _json(app_info_payload())
            case "GET", ["gateway", "bot"]:
                return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": {
                    "total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}})
            case "PUT", ["applications", _, "commands"] if self.break_command_sync:
                return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
            case "PUT", ["applications", _, "commands"]:
                self.commands = [{**c, "id": str(self.new_id()), "application_id": str(APP_ID),
                                  "version": "1", "default_member_permissions": None, "nsfw": False,
                                  "type": c.get("type", 1)} for c in body]
                return _json(self.commands)
            case "GET", ["channels", channel_id]:
                channel = self.channels.get(channel_id)
                return _json(channel) if channel else _error(404, 10003, "Unknown Channel")
            case "POST", ["channels", channel_id, "typing"]:
                return web.Response(status=204)
            case "POST", ["channels", channel_id, "messages"]:
                return self._create(channel_id, body)
            case "GET", ["channels", channel_id, "messages"]:
                return self._history(channel_id, query)
            case "GET", ["channels", _, "messages", message_id]:
                msg = self._alive(message_id)
                return _json(msg) if msg else _error(404, 10008, "Unknown Message")
            case "PATCH", ["channels", _, "messages", message_id]:
                return self._edit(message_id, body)
            case "DELETE", ["channels", _, "messages", message_id]:
                self.deleted.add(message_id)
                return web.Response(status=204)
            case "POST", ["channels", channel_id, "messages", message_id, "threads"]:
                return self._thread(channel_id, message_id, body)
            case "POST", ["interactions", _, token, "callback"]:
                return self._callback(token, body)
            case "PATCH", ["webhooks", _, token, "messages", "@original"]:
                return self._edit(self._interactions[token]["original"], body)
            case "GET", ["webhooks", _, token, "messages", "@original"]:
                return _json(self.messages[self._interactions[token]["original"]])
            case "PATCH", ["webhooks", _, _, "messages", message_id]:
                return self._edit(message_id, body)
            case "POST", ["webhooks", _, token]:
                return self._followup(token, body)
        return _error(404, 0, "404: Not Found")

    def _alive(self, message_id: str) -> dict[str, Any] | None:
        return None if message_id in self.deleted else self.messages.get(message_id)

    def _create(self, channel_id: str, body: dict[str, Any], *, kind: int = 0,
                flags: int = 0) -> web.Response:
        channel = self.channels.get(channel_id)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        content = body.get("content") or ""
        if len(content) > 2000:
            return _error(400, 50035, "Invalid Form Body (content: Must be 2000 or fewer in length.)")
        if not content and not body.get("embeds"):
            return _error(400, 50006, "Cannot send an empty message")
        referenced = None
        ref = body.get("message_reference")
        if ref:
            referenced = self._alive(str(ref["message_id"]))
            if referenced is None and ref.get("fail_if_not_exists", True):
                return _error(400, 50035, "Invalid Form Body (message_reference: Unknown message)")
        msg = message_payload(self.new_id(), int(channel_id), self.bot, content,
                              guild_id=int(channel["guild_id"]) if "guild_id" in channel else None,
                              referenced=referenced, kind=kind, embeds=body.get("embeds"),
                              components=body.get("components"), flags=flags | int(body.get("flags") or 0))
        msg["_created_with"] = body
        self.messages[msg["id"]] = msg
        if self.echo_bot_messages and not msg["flags"] & EPHEMERAL:  # ephemeral ones are never echoed
            asyncio.get_running_loop().create_task(self.dispatch("MESSAGE_CREATE", _public(msg)))
        return _json(_public(msg))

    def _edit(self, message_id: str, body: dict[str, Any]) -> web.Response:
        msg = self._alive(message_id)
        if msg is None:
            return _error(404, 10008, "Unknown Message")
        if "content" in body and len(body["content"] or "") > 2000:
            return _error(400, 50035, "Invalid Form Body (content: Must be 2000 or fewer in length.)")
        for key in ("content", "embeds", "components"):
            if key in body:
                msg[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        msg["edited_timestamp"] = TS
        msg["flags"] = msg["flags"] & ~128  # no longer "thinking"
        msg.setdefault("_edits", []).append(body)
        return _json(_public(msg))

    def _history(self, channel_id: str, query: dict[str, str]) -> web.Response:
        if channel_id not in self.channels:
            return _error(404, 10003, "Unknown Channel")
        before = int(query.get("before", 2**63))
        found = [m for m in self.messages.values()
                 if m["channel_id"] == channel_id and m["id"] not in self.deleted and int(m["id"]) < before]
        found.sort(key=lambda m: int(m["id"]), reverse=True)
        return _json([_public(m) for m in found[: int(query.get("limit", 50))]])

    def _thread(self, channel_id: str, message_id: str, body: dict[str, Any]) -> web.Response:
        if self._alive(message_id) is None:
            return _error(404, 10008, "Unknown Message")
        if message_id in self.channels:
            return _error(400, 160004, "A thread has already been created for this message")
        if len(body.get("name", "")) > 100 or not body.get("name"):
            return _error(400, 50035, "Invalid Form Body (name: Must be between 1 and 100 in length.)")
        # A thread started from a message has the message's id.
        thread = thread_payload(int(message_id), body["name"], parent_id=int(channel_id), owner_id=BOT_ID)
        self.channels[message_id] = thread
        event = {**thread, "newly_created": True}
        asyncio.get_running_loop().create_task(self.dispatch("THREAD_CREATE", event))
        return _json(thread, status=201)

    def _callback(self, token: str, body: dict[str, Any]) -> web.Response:
        state = self._interactions[token]
        state["callbacks"].append(body)
        kind, data = body["type"], body.get("data") or {}
        flags = int(data.get("flags") or 0)
        result: dict[str, Any] = {"interaction": {"id": "0", "type": 2, "response_message_loading": kind == 5,
                                                  "response_message_ephemeral": bool(flags & EPHEMERAL)}}
        if kind in (4, 5):  # a message (4) or "thinking…" (5) as the response
            content = data.get("content") or ""
            created = self._create(state["channel_id"], {"content": content or "…", **data}, kind=20,
                                   flags=flags | (128 if kind == 5 else 0))
            msg = json.loads(created.text)
            self.messages[msg["id"]]["content"] = content
            state["original"] = msg["id"]
            result["interaction"]["response_message_id"] = msg["id"]
            result["resource"] = {"type": kind, "message": _public(self.messages[msg["id"]])}
        return _json(result)

    def _followup(self, token: str, body: dict[str, Any]) -> web.Response:
        state = self._interactions[token]
        response = self._create(state["channel_id"], body)
        if response.status == 200:
            state["followups"].append(json.loads(response.text)["id"])
        return response


def _public(msg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if not k.startswith("_")}


def _option_type(value: Any) -> int:
    return 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 3


def _json(data: Any, *, status: int = 200) -> web.Response:
    # discord.py parses a body as JSON only if Content-Type is exactly application/json (no charset).
    headers = {"Content-Type": "application/json"}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status=status)
