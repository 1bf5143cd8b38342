"""Datasets for the stages: read, check and split the feedback store's exports (and curated JSONL files).

Formats are trl's conversational ones, as `feedback` exports them:
- sft:     {"messages": [..., {"role": "assistant", ...}]}   (or {"prompt": [...], "completion": [...]})
- pairs:   {"prompt": [...], "chosen": [assistant msg], "rejected": [assistant msg]}
- kto:     {"prompt": [...], "completion": [assistant msg], "label": true|false}
- prompts: {"prompt": [...]}                                  (for RL)

A malformed row rejects the whole dataset with its place named; rows that are well-formed but unusable (chosen equal
to rejected, an empty answer, a KTO answer labelled both ways, longer than max_length) are skipped and counted;
nothing usable left is an error.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Checked",
    "DatasetError",
    "Kind",
    "check",
    "holdout_split",
    "prompt_key",
    "prompt_of",
    "prompts_from",
    "read_curated",
    "read_jsonl",
    "to_tokenized",
]

Kind = Literal["sft", "pairs", "kto", "prompts"]
ROLES = {"system", "user", "assistant", "tool"}


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message names the file/row and the problem."""


@dataclass
class Checked:
    kind: str
    rows: list[dict[str, Any]]
    skipped: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        text = f"{len(self.rows)} {self.kind} example(s)"
        if self.skipped:
            reasons = ", ".join(f"{n} {why}" for why, n in self.skipped.most_common())
            text += f" ({sum(self.skipped.values())} skipped: {reasons})"
        return text


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a file that cannot be read or a line that is not a JSON object is a DatasetError
    naming the file, the line and the fix."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"dataset file not found: {path}; check the path") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (invalid byte at offset {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise DatasetError(f"cannot read dataset file {path}: {e.strerror or e}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DatasetError(f"{path}:{number}: not valid JSON ({e.args[0]}); fix or remove that line "
                               "(one JSON object per line)") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}; fix or remove "
                               "that line (one JSON object per line)")
        rows.append(row)
    return rows


def read_curated(path: Path | str, kind: Kind = "sft") -> list[dict[str, Any]]:
    """A hand-written dataset file, read and checked as `kind` before any training starts: a bad file is a data
    error for the operator (DatasetError naming file and line), not a failed training run."""
    rows = read_jsonl(path)
    check(rows, kind, source=str(path))
    return rows


def _messages(value: Any, where: str, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: {name!r} must be a non-empty list of {{role, content}} messages")
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DatasetError(f"{where}: {name!r} has a message that is not {{role: {'|'.join(sorted(ROLES))}, "
                               f"content: string}}: {json.dumps(m)[:120]}")
    return value


def _answer(value: Any, where: str, name: str) -> str:
    messages = _messages(value, where, name)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise DatasetError(f"{where}: {name!r} must be exactly one assistant message")
    return messages[0]["content"].strip()


def _require(row: dict[str, Any], keys: tuple[str, ...], where: str, kind: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DatasetError(f"{where}: a {kind} row needs {', '.join(keys)}; missing {', '.join(missing)}")


def check(rows: list[dict[str, Any]], kind: Kind, *, tokenizer: Any = None, max_length: int | None = None,
          source: str = "dataset") -> Checked:
    """Validate `rows` as `kind`; with a tokenizer, skip examples whose tokens exceed `max_length`
    (for prompts: whose prompt alone does)."""
    out = Checked(kind, [])
    for index, row in enumerate(rows, 1):
        where = f"{source} row {index}"
        # Step 1: structure (a malformed row means the file is wrong: reject it all, loudly).
        match kind:
            case "sft":
                if "messages" in row:
                    msgs = _messages(row["messages"], where, "messages")
                    if msgs[-1]["role"] != "assistant":
                        raise DatasetError(f"{where}: the last message must be the assistant's answer")
                    prompt, answers = msgs[:-1], [msgs[-1]["content"].strip()]
                    kept = row.get("kept", 0)
                    if type(kept) is not int or not 0 <= kept <= len(msgs[-1]["content"]):
                        raise DatasetError(f"{where}: 'kept' must be a count of the answer's characters, got {kept!r}")
                else:
                    _require(row, ("prompt", "completion"), where, "sft (messages, or prompt + completion)")
                    prompt = _messages(row["prompt"], where, "prompt")
                    answers = [_answer(row["completion"], where, "completion")]
            case "pairs":
                _require(row, ("prompt", "chosen", "rejected"), where, kind)
                prompt = _messages(row["prompt"], where, "prompt")
                answers = [_answer(row["chosen"], where, "chosen"), _answer(row["rejected"], where, "rejected")]
            case "kto":
                _require(row, ("prompt", "completion", "label"), where, kind)
                prompt = _messages(row["prompt"], where, "prompt")
                answers = [_answer(row["completion"], where, "completion")]
                if not isinstance(row["label"], bool):
                    raise DatasetError(f"{where}: 'label' must be true or false, got {row['label']!r}")
            case "prompts":
                _require(row, ("prompt",), where, kind)
                prompt, answers = _messages(row["prompt"], where, "prompt"), []
            case _:
                raise ValueError(f"unknown dataset kind {kind!r}")
        # Step 2: content that is well-formed but teaches nothing is skipped and counted.
        if not prompt and kind != "sft":
            raise DatasetError(f"{where}: the prompt has no messages")
        if any(not a for a in answers):
            out.skipped["empty answer"] += 1
            continue
        if kind == "pairs" and answers[0] == answers[1]:
            out.skipped["chosen equals rejected"] += 1
            continue
        if tokenizer is not None and max_length is not None and _too_long(tokenizer, prompt, answers, max_length):
            out.skipped[f"longer than max_length {max_length}"] += 1
            continue
        out.rows.append(row)
    if kind == "kto":  # the same answer to the same prompt labelled both ways teaches nothing: drop every copy
        labels: dict[str, set[bool]] = {}
        for row in out.rows:
            labels.setdefault(_kto_key(row), set()).add(row["label"])
        conflicting = [row for row in out.rows if len(labels[_kto_key(row)]) > 1]
        if conflicting:
            out.rows = [row for row in out.rows if len(labels[_kto_key(row)]) == 1]
            out.skipped["labelled both true and false"] += len(conflicting)
    if not out.rows:
        why = f": {out.describe()}" if out.skipped else ""
        raise DatasetError(f"{source}: no usable {kind} examples{why}")
    return out


def _kto_key(row: dict[str, Any]) -> str:
    return json.dumps([row["prompt"], row["completion"][0]["content"].strip()], sort_keys=True)


def _too_long(tokenizer: Any, prompt: list[dict[str, str]], answers: list[str], max_length: int) -> bool:
    def count(messages: list[dict[str, str]], generation_prompt: bool) -> int:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                            return_dict=True)["input_ids"]
        return len(ids)

    if not answers:
        return count(prompt, True) >= max_length
    return any(count(prompt + [{"role": "assistant", "content": a}], False) > max_length for a in answers)


def to_tokenized(rows: list[dict[str, Any]], tokenizer: Any, *, skip_kept: bool = True) -> list[dict[str, Any]]:
    """SFT rows as trl's tokenized format, {"input_ids", "completion_mask"}: the chat template's rendering, with the
    loss on the answer's tokens as trl's prompt/completion rows would put it (`assistant_only_loss` would need
    {% generation %} markers in the chat template, which SmolLM2's, like most, does not have).
    With `skip_kept`, a correction's "kept" characters (the model's own words it kept, feedback's export) are left
    out of the loss too: it covers what the person changed and the end of the turn. Training on kept words —
    sampled, not the model's greedy text — moved its other answers: on a kept help-desk night (2026-12-06) the
    candidate lost 3 of 20 must-still-answer facts with them in the loss (25/30 held-out answers liked), 1 without
    (30/30)."""
    out = []
    for row in rows:
        messages = row["messages"] if "messages" in row else row["prompt"] + row["completion"]
        head = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        start = len(head) + (row.get("kept", 0) if skip_kept else 0)
        if not text.startswith(head) or not getattr(tokenizer, "is_fast", False):  # no character offsets: trl's way
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            n = len(tokenizer(head, add_special_tokens=False)["input_ids"])
            out.append({"input_ids": ids, "completion_mask": [0] * n + [1] * (len(ids) - n)})
            continue
        # The answer's content starts right after the generation prompt; a token counts from the character it
        # starts at (a word's leading space included).
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        out.append({"input_ids": enc["input_ids"],
                    "completion_mask": [int(begin >= start) for begin, _ in enc["offset_mapping"]]})
    return out


def prompt_key(prompt: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()


def prompt_of(row: dict[str, Any]) -> list[dict[str, str]]:
    """The prompt messages of a row of any kind (an SFT row: its messages before the answer)."""
    return row["prompt"] if "prompt" in row else row["messages"][:-1]


def prompts_from(*datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct prompts of any rows, in first-seen order, as {"prompt": [...]} (the RL dataset)."""
    seen, out = set(), []
    for rows in datasets:
        for row in rows:
            prompt = prompt_of(row)
            key = prompt_key(prompt)
            if prompt and key not in seen:
                seen.add(key)
                out.append({"prompt": prompt})
    return out


def holdout_split(datasets: dict[str, list[dict[str, Any]]], fraction: float, *, min_pairs: int = 0
                  ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Hold out `fraction` of the distinct prompts (at least one when there are two or more), the same prompts
    in every dataset, so the gate never judges on a question any stage trained on. Deterministic.

    Stratified: prompts with a preference pair, prompts with only liked answers and the rest are each held out in
    `fraction` (largest remainder, `ceil(prompts x fraction)` in all), so the gate's share of the night's pairs does
    not hang on the draw. `min_pairs`: more prompts with pairs are held out until that many pairs are, but never more
    than half of those prompts (training keeps the rest), and none when `fraction` holds out nothing. Why: the gate's
    verdict is a 95 % interval on the held-out pairs; bench/loop.py's numbered night 1 (2026-12-06, 40 prompts, 15
    with pairs, 2 each) held out 10 prompts but only 3 with pairs: 5 of 6 pairs moved (the sixth by -0.017 nats),
    95 % interval 0.44-0.97, rejected."""
    keyed = {kind: [(prompt_key(prompt_of(r)), r) for r in rows] for kind, rows in datasets.items()}
    keys = {k for rows in keyed.values() for k, _ in rows}
    n = math.ceil(len(keys) * fraction) if fraction > 0 and len(keys) >= 2 else 0
    pairs_per = Counter(k for k, _ in keyed.get("pairs", []))
    liked = {k for k, _ in keyed.get("sft", [])} - set(pairs_per)
    # Ordering by hash is a fixed pseudo-random shuffle: the same data always splits the same way.
    order = sorted(keys, key=lambda k: hashlib.sha256(("holdout" + k).encode()).hexdigest())
    strata = [[k for k in order if k in pairs_per], [k for k in order if k in liked],
              [k for k in order if k not in pairs_per and k not in liked]]
    quotas = [len(s) * n / len(keys) if keys else 0 for s in strata]
    take = [math.floor(q) for q in quotas]
    for i in sorted(range(3), key=lambda i: -(quotas[i] - take[i]))[:n - sum(take)]:  # largest remainder
        take[i] += 1
    while n and take[0] < len(strata[0]) // 2 and sum(pairs_per[k] for k in strata[0][:take[0]]) < min_pairs:
        take[0] += 1
    held_keys = {k for s, t in zip(strata, take, strict=True) for k in s[:t]}
    train = {kind: [r for k, r in rows if k not in held_keys] for kind, rows in keyed.items()}
    held = {kind: [r for k, r in rows if k in held_keys] for kind, rows in keyed.items()}
    return train, held
