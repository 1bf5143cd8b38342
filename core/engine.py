"""The engine: one async entry point every front end uses.

    reply = await engine.answer(Turn(text="...", platform="slack", channel="C1", thread="171.2", user="U1"))

It resolves the channel profile and decoding, retrieves documents when the mode asks for it, builds a prompt
that fits the context window, runs the model off the event loop (batched with other conversations), and returns
a `Reply` that records exactly what the model saw. `on_reply` (e.g. the feedback store) is awaited before the
reply is returned, so a front end only ever posts recorded answers.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from core.canary import CanaryRouter, with_adapter
from core.config import ChannelProfile, Settings
from core.decoding import DecodingConfig, resolve_decoding
from core.models import ChatModel, Generation
from core.prompts import ConversationMemory, build_prompt, split_reasoning
from core.tools import CALLS_FOR
from core.types import OPERATOR_PLATFORM, Message, Reply, Source, TraceStep, Turn, is_qualified

__all__ = ["EMPTY_MESSAGE_REPLY", "Engine", "Retriever", "choose_mode"]

logger = logging.getLogger(__name__)

MODES = ("chat", "rag", "agent", "auto")
EMPTY_MESSAGE_REPLY = (
    "Hi! Ask me a question in plain words — for example \"How do I set up the VPN?\" — "
    "and I'll answer, from the company docs where I can."
)
NOTHING_FOUND_REPLY = "I found nothing about that in the documents I can read from this channel."
NO_ANSWER_REPLY = "Sorry, I couldn't come up with an answer. Try rephrasing, or ask for another answer."


class Retriever(Protocol):
    async def retrieve(self, query: str, *, channel: str | tuple[str, ...], k: int | None = None) -> list[Source]: ...


OnReply = Callable[[Reply], Awaitable[None]]
OnText = Callable[[str], None]

_QUESTION = re.compile(
    r"(?i)^\s*(how|what|where|when|which|who|why|is|are|can|do|does|should|may)\b|\?\s*$|\b(policy|docs?|handbook)\b"
)


def choose_mode(text: str, *, has_retriever: bool, has_tools: bool = True) -> str:
    """The `auto` rule: arithmetic and date/time questions go to the agent (it has the calculator and the clock),
    other questions to the documents when a retriever is available, everything else is chat.
    (If retrieval finds nothing relevant, `auto` falls back to chat rather than refusing.)"""
    if has_tools and any(pattern.search(text) for pattern in CALLS_FOR.values()):
        return "agent"
    if has_retriever and _QUESTION.search(text):
        return "rag"
    return "chat"


class Engine:
    def __init__(
        self,
        settings: Settings,
        model: ChatModel,
        *,
        retriever: Retriever | None = None,
        on_reply: OnReply | None = None,
        format_context: Callable[[list[Source]], str] | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.retriever = retriever
        self.on_reply = on_reply
        self.format_context = format_context or _numbered_excerpts
        self.memory = ConversationMemory(max_turns=settings.history_turns)
        # Per conversation: the restricted sources its replies drew on (see _carry_restricted).
        self._restricted_seen: OrderedDict[tuple, dict[str, Source]] = OrderedDict()
        # Canary rollout: the adapter watcher sets it; a conversation's adapter is fixed by its key (sticky).
        self.canary = CanaryRouter()

    # -- public ------------------------------------------------------------------------------------------

    async def answer(self, turn: Turn, *, on_text: OnText | None = None) -> Reply:
        """Answer one turn. `on_text` receives the answer so far while it is generated (not with chain-of-thought,
        whose reasoning must not be shown)."""
        t0 = time.perf_counter()
        if not turn.text.strip():
            return Reply(answer=EMPTY_MESSAGE_REPLY, turn=turn, mode="none", called_model=False,
                         model=self.model.name, trace=[TraceStep("empty_message", {})])
        profile = self._profile(turn)
        preset = turn.preset or profile.preset
        decoding = resolve_decoding(self.settings.presets, preset, turn.decoding)
        mode, sources, trace = await self._retrieve(turn, profile)
        if mode == "agent":
            return await self._agent(turn, profile, decoding, preset, trace, t0)
        if mode == "rag" and not sources:
            reply = Reply(answer=NOTHING_FOUND_REPLY, turn=turn, mode=mode, preset=preset, called_model=False,
                          model=self.model.name, decoding=decoding.model_dump(), trace=trace)
            return await self._finish(reply, t0)
        history = list(turn.history) if turn.history is not None else self.memory.get(turn.conversation_key)
        built = build_prompt(
            profile=profile, history=history, text=turn.text.strip(),
            context=self.format_context(sources) if sources else None,
            count_tokens=self.model.count_tokens, truncate=self.model.truncate,
            context_window=self.model.context_window, reserve=decoding.max_new_tokens,
        )
        trace += built.trace
        stream = None if profile.chain_of_thought else on_text
        model = with_adapter(self.model, self.canary.adapter_for(turn.conversation_key))
        lead = await self._evidence(turn.text.strip(), mode, sources, profile, model, trace)
        gens = await _generate(model, built.messages, decoding, stream, lead)
        reply = self._reply(turn, gens[0], built.messages, decoding, preset, mode, sources, trace, profile)
        reply.adapter = model.adapter
        if turn.history is None:
            self.memory.append(turn.conversation_key, Message("user", turn.text.strip()),
                               Message("assistant", reply.answer))
        return await self._finish(reply, t0)

    async def candidates(self, turn: Turn, n: int = 2) -> list[Reply]:
        """`n` alternative answers to the same prompt, sampled in one batched call (they share the prompt,
        so votes on them make preference pairs). The conversation memory is not changed."""
        if n < 1:
            raise ValueError("n must be at least 1")
        if not turn.text.strip():
            raise ValueError("an empty message has no alternative answers")
        t0 = time.perf_counter()
        profile = self._profile(turn)
        preset = turn.preset or profile.preset
        base = resolve_decoding(self.settings.presets, preset, turn.decoding)
        decoding = _sampling_variant(base, n=n)
        mode, sources, trace = await self._retrieve(turn, profile)
        history = list(turn.history) if turn.history is not None else self.memory.get(turn.conversation_key)
        built = build_prompt(
            profile=profile, history=history, text=turn.text.strip(),
            context=self.format_context(sources) if sources else None,
            count_tokens=self.model.count_tokens, truncate=self.model.truncate,
            context_window=self.model.context_window, reserve=decoding.max_new_tokens,
        )
        model = with_adapter(self.model, self.canary.adapter_for(turn.conversation_key))
        trace += built.trace
        lead = await self._evidence(turn.text.strip(), mode, sources, profile, model, trace)
        gens = await _generate(model, built.messages, decoding, None, lead)
        replies = [self._reply(turn, g, built.messages, decoding, preset, mode, sources, list(trace),
                               profile) for g in gens]
        for r in replies:
            r.adapter = model.adapter
        for r in replies[1:]:
            r.sibling_of = replies[0].id
        return [await self._finish(r, t0) for r in replies]

    async def another(self, previous: Reply, *, on_text: OnText | None = None) -> Reply:
        """"Try another answer": the same prompt the model saw before, decoded differently, linked as a sibling."""
        t0 = time.perf_counter()
        if not previous.prompt:
            raise ValueError("that reply did not come from the model; there is nothing to answer again")
        profile = self._profile(previous.turn)
        base = DecodingConfig(**previous.decoding) if previous.decoding else self.settings.presets["balanced"]
        decoding = _sampling_variant(base, n=1)
        messages = [m.as_dict() for m in previous.prompt]
        stream = None if profile.chain_of_thought else on_text
        model = with_adapter(self.model, self.canary.adapter_for(previous.turn.conversation_key))
        trace = [TraceStep("another", {"of": previous.id, "decoding": decoding.model_dump()})]
        # A quoted rag answer the user did not like: the next evidence sentence opens this one.
        lead = _next_lead(previous.trace, trace) if hasattr(model, "continue_answer") else ""
        gens = await _generate(model, messages, decoding, stream, lead)
        reply = self._reply(previous.turn, gens[0], messages, decoding, previous.preset, previous.mode,
                            previous.sources, trace, profile)
        reply.adapter = model.adapter
        reply.sibling_of = previous.id
        return await self._finish(reply, t0)

    async def aclose(self) -> None:
        await self.model.aclose()

    # -- steps -------------------------------------------------------------------------------------------

    def _profile(self, turn: Turn) -> ChannelProfile:
        """The channel profile: by channel id, name, then workspace. An operator asking as an identity
        (`--channel slack:T0123:C0456`) gets that channel's profile."""
        if turn.platform == OPERATOR_PLATFORM and is_qualified(turn.channel):
            _, workspace, channel = turn.audience.split(":")
            return self.settings.profile_for(channel, workspace)
        return self.settings.profile_for(turn.channel, turn.channel_name, turn.workspace)

    async def _retrieve(self, turn: Turn, profile: ChannelProfile) -> tuple[str, list[Source], list[TraceStep]]:
        mode = turn.mode or profile.mode
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        trace: list[TraceStep] = []
        if mode == "auto":
            mode = choose_mode(turn.text, has_retriever=self.retriever is not None, has_tools=bool(profile.tools))
            trace.append(TraceStep("mode", {"auto": mode}))
        if mode != "rag":
            return mode, [], trace
        if self.retriever is None:
            raise ValueError("mode 'rag' needs documents: ingest some with `kaizen ingest PATH --source NAME`")
        # Access is decided by where the question was asked, as an identity (never by a channel's name).
        sources = await self.retriever.retrieve(turn.text.strip(), channel=turn.audience, k=self.settings.rag.top_k)
        trace.append(TraceStep("retrieve", {"channel": turn.audience, "sources": [s.id for s in sources]}))
        if not sources and (turn.mode or profile.mode) == "auto":
            mode = "chat"  # auto: nothing relevant in the docs, so just chat
        return mode, sources, trace

    async def _evidence(self, question: str, mode: str, sources: list[Source], profile: ChannelProfile,
                        model: Any, trace: list[TraceStep]) -> str:
        """The opening of a quoted rag answer (rag.answer_style "quote"): the excerpt sentence that answers the
        question, cited as [n]; "" when the answer is generated whole (another style, chain-of-thought, a backend
        that cannot continue a partial answer, or no sentence found). The ranking goes into the trace."""
        if (mode != "rag" or not sources or self.settings.rag.answer_style != "quote" or profile.chain_of_thought
                or not hasattr(model, "continue_answer") or not hasattr(self.retriever, "evidence")):
            return ""
        from core.rag.evidence import cite  # core.rag loads llama-index: not at import time

        ranked = await self.retriever.evidence(question, sources)
        if not ranked:
            return ""
        sentences = [[e.source + 1, e.sentence, round(e.score, 4)] for e in ranked[:EVIDENCE_KEPT]]
        trace.append(TraceStep("evidence", {"sentences": sentences, "used": 0}))
        return cite(sentences[0][1], sentences[0][0])

    async def _agent(self, turn: Turn, profile: ChannelProfile, decoding: DecodingConfig, preset: str,
                     trace: list[TraceStep], t0: float) -> Reply:
        from core.agent import APOLOGY, ReActAgent
        from core.tools import build_tools

        tools = build_tools(self.settings.tools, profile.tools, retriever=self.retriever, channel=turn.audience,
                            k=self.settings.rag.top_k, audience=turn.audience or "")
        history = list(turn.history) if turn.history is not None else self.memory.get(turn.conversation_key)
        model = with_adapter(self.model, self.canary.adapter_for(turn.conversation_key))
        quote = self.settings.rag.answer_style == "quote" and hasattr(self.retriever, "evidence")
        agent = ReActAgent(model, tools, self.settings.tools, evidence=self.retriever.evidence if quote else None)
        try:
            result = await agent.run(persona=profile.system_prompt, history=history, question=turn.text.strip(),
                                     decoding=decoding)
        except Exception as e:  # noqa: BLE001 - the user gets an apology, the trace the reason
            logger.exception("agent failed")
            reply = Reply(answer=APOLOGY, turn=turn, mode="agent", preset=preset, model=self.model.name,
                          adapter=model.adapter,
                          decoding=decoding.model_dump(), trace=[*trace, TraceStep("error", {"error": repr(e)})])
            return await self._finish(reply, t0)
        prompt_dicts = [m.as_dict() for m in result.prompt]
        # Whatever a tool showed the model (documents, pages, company data) is recorded as the reply's sources,
        # so its `restricted` flag and the exports see it.
        reply = Reply(
            answer=result.answer, turn=turn, sources=list(result.sources), trace=[*trace, *result.trace],
            prompt=result.prompt,
            model=self.model.name, adapter=model.adapter, preset=preset, mode="agent",
            decoding=decoding.model_dump(), prompt_tokens=self.model.count_tokens(prompt_dicts),
            completion_tokens=result.completion_tokens,
        )
        if turn.history is None:
            self.memory.append(turn.conversation_key, Message("user", turn.text.strip()),
                               Message("assistant", reply.answer))
        return await self._finish(reply, t0)

    def _reply(self, turn: Turn, g: Generation, messages: list[dict[str, str]], decoding: DecodingConfig,
               preset: str, mode: str, sources: list[Source], trace: list[TraceStep],
               profile: ChannelProfile) -> Reply:
        answer, reasoning = split_reasoning(g.text) if profile.chain_of_thought else (g.text, "")
        trace = list(trace)
        if reasoning:
            trace.append(TraceStep("reasoning", {"text": reasoning}))
        trace.append(TraceStep("generate", {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                                            **g.extra}))
        return Reply(
            answer=answer or NO_ANSWER_REPLY,
            turn=turn,
            sources=list(sources),
            trace=trace,
            prompt=[Message(m["role"], m["content"]) for m in messages],
            model=self.model.name,
            adapter=self.model.adapter,
            preset=preset,
            mode=mode,
            decoding=decoding.model_dump(),
            prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens,
            first_token_ms=None if g.first_token_s is None else g.first_token_s * 1000,
        )

    async def _finish(self, reply: Reply, t0: float) -> Reply:
        reply.latency_ms = (time.perf_counter() - t0) * 1000
        self._carry_restricted(reply)
        if self.on_reply is not None:
            await self.on_reply(reply)
        return reply


    def _carry_restricted(self, reply: Reply) -> None:
        """Restricted text shown earlier in a conversation is in the history of its later prompts: a reply that
        called the model in that conversation carries those sources too (metadata `via: conversation`), so it is
        recorded as restricted and left out of exports like the answer it follows."""
        key = reply.turn.conversation_key
        seen = self._restricted_seen.get(key)
        if seen and reply.called_model:
            have = {s.id for s in reply.sources}
            reply.sources += [dataclasses.replace(s, metadata={**s.metadata, "via": "conversation"})
                              for s in seen.values() if s.id not in have]
        restricted = {s.id: s for s in reply.sources if s.channels}
        if restricted:
            entry = self._restricted_seen.pop(key, {})
            entry.update(restricted)
            self._restricted_seen[key] = entry
            while len(self._restricted_seen) > self.memory.max_conversations:
                self._restricted_seen.popitem(last=False)


EVIDENCE_KEPT = 3  # evidence sentences kept in the trace: "Try another answer" opens with the next one


def _next_lead(previous: list[TraceStep], trace: list[TraceStep]) -> str:
    """The lead of another answer to a quoted rag reply (its trace's next evidence sentence); "" if it had none."""
    from core.rag.evidence import cite

    step = next((t for t in previous if t.kind == "evidence"), None)
    if step is None or not step.detail.get("sentences"):
        return ""
    sentences = step.detail["sentences"]
    used = (step.detail.get("used", 0) + 1) % len(sentences)
    trace.append(TraceStep("evidence", {"sentences": sentences, "used": used}))
    return cite(sentences[used][1], sentences[used][0])


def _join(lead: str, text: str) -> str:
    """A quoted answer: the lead, then the model's continuation up to its first blank line (a small model rambles
    on in a new paragraph), without the continuation's own [n] marks: the lead's citation is Kaizen's and points
    at the excerpt that holds the sentence, while the model's marks are unchecked guesses (e.g. "[2]" after a
    claim no excerpt makes)."""
    text = re.sub(r"\s*\[\d+\]", "", text.split("\n\n")[0]).strip()
    if not text:
        return lead
    return lead + ("" if text[0] in ".,;:!?)" else " ") + text


async def _generate(model: Any, messages: list[dict[str, str]], decoding: DecodingConfig, on_text: OnText | None,
                    lead: str) -> list[Generation]:
    """`model.generate`, or with a `lead` the model's continuation of an answer that begins with it (the lead is
    streamed at once and is part of every generation's text)."""
    if not lead:
        return await model.generate(messages, decoding, on_text=on_text)
    if on_text is not None:
        on_text(lead)
    stream = None if on_text is None else (lambda text: on_text(_join(lead, text)))
    gens = await model.continue_answer(messages, lead, decoding, on_text=stream)
    return [dataclasses.replace(g, text=_join(lead, g.text)) for g in gens]


def _sampling_variant(base: DecodingConfig, *, n: int) -> DecodingConfig:
    """A different decoding of the same prompt: sampling with a fresh seed. From greedy or beam, the `balanced`
    knobs (a small model derails when sampled without top-k); from sampling, a touch warmer."""
    params: dict[str, Any] = base.model_dump()
    if base.strategy == "sample":
        params.update(temperature=min(1.0, base.temperature + 0.1))
    else:
        params.update(temperature=0.7, top_p=0.9, top_k=50)
    params.update(strategy="sample", num_beams=1, length_penalty=1.0, early_stopping=False,
                  num_return_sequences=n, seed=random.randrange(2**31))
    return DecodingConfig(**params)


def _numbered_excerpts(sources: list[Source]) -> str:
    return "\n\n".join(f"[{i}] {s.title}\n{s.text}" for i, s in enumerate(sources, 1))
