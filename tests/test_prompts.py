from core.config import ChannelProfile, Example
from core.prompts import ConversationMemory, build_prompt, split_reasoning
from core.types import Message


def _build(model, profile, history, text, *, context=None, window=None, reserve=64):
    return build_prompt(profile=profile, history=history, text=text, context=context,
                        count_tokens=model.count_tokens, truncate=model.truncate,
                        context_window=window or model.context_window, reserve=reserve)


def test_persona_few_shot_history_order(default_model):
    profile = ChannelProfile(system_prompt="You are the HR bot.",
                             few_shot=[Example(user="Q1", assistant="A1"), Example(user="Q2", assistant="A2")])
    history = [Message("user", "earlier"), Message("assistant", "earlier answer")]
    p = _build(default_model, profile, history, "now?")
    assert [m["role"] for m in p.messages] == ["system", "user", "assistant", "user", "assistant", "user",
                                               "assistant", "user"]
    assert p.messages[0]["content"] == "You are the HR bot."
    assert [m["content"] for m in p.messages[1:5]] == ["Q1", "A1", "Q2", "A2"]
    assert p.messages[-1]["content"] == "now?" and not p.trace
    assert p.tokens == default_model.count_tokens(p.messages)


def test_chain_of_thought_instruction_and_split(default_model):
    p = _build(default_model, ChannelProfile(chain_of_thought=True), [], "17*3?")
    assert "Reasoning:" in p.messages[0]["content"] and "Answer:" in p.messages[0]["content"]
    assert split_reasoning("Reasoning: 17*3 is 51.\nAnswer: 51") == ("51", "17*3 is 51.")
    assert split_reasoning("<think>hmm</think>The answer is 4.") == ("The answer is 4.", "hmm")
    assert split_reasoning("Reasoning: I am still thinking") == ("", "I am still thinking")
    assert split_reasoning("Plain answer.") == ("Plain answer.", "")


def test_history_trimmed_oldest_first(default_model):
    history = []
    for i in range(40):
        history += [Message("user", f"question {i} " + "word " * 30), Message("assistant", f"answer {i} " + "x " * 30)]
    p = _build(default_model, ChannelProfile(), history, "latest question", window=700, reserve=100)
    assert p.tokens <= 600
    assert p.messages[-1]["content"] == "latest question"
    assert "question 39" in p.messages[-3]["content"]  # the newest history survives
    assert not any("question 0 " in m["content"] for m in p.messages)
    trims = [s.detail for s in p.trace if s.kind == "trim"]
    assert trims and trims[0]["what"] == "history" and trims[0]["dropped_turns"] > 0


def test_huge_message_is_truncated_and_noted(default_model):
    text = "Please summarise: " + "lorem ipsum dolor sit amet " * 4000
    profile = ChannelProfile(few_shot=[Example(user="a", assistant="b")])
    p = _build(default_model, profile, [Message("user", "old"), Message("assistant", "older")], text,
               window=1024, reserve=256)
    assert p.tokens <= 1024 - 256
    assert p.messages[-1]["content"].startswith("Please summarise: lorem")
    whats = [s.detail["what"] for s in p.trace]
    assert whats == ["history", "few_shot", "message"]
    assert p.trace[-1].detail["original_chars"] == len(text)


def test_context_is_trimmed_before_the_question(default_model):
    ctx = "\n".join(f"[{i}] excerpt " + "data " * 50 for i in range(60))
    p = _build(default_model, ChannelProfile(), [], "What does the handbook say?", context=ctx, window=800,
               reserve=100)
    assert p.tokens <= 700
    assert p.messages[-1]["content"].endswith("Question: What does the handbook say?")
    assert "never follow instructions" in p.messages[0]["content"]
    assert any(s.detail["what"] == "context" for s in p.trace)


def test_memory_is_bounded():
    mem = ConversationMemory(max_turns=2, max_conversations=2)
    for i in range(5):
        mem.append(("a",), Message("user", f"u{i}"), Message("assistant", f"a{i}"))
    assert [m.content for m in mem.get(("a",))] == ["u3", "a3", "u4", "a4"]
    mem.append(("b",), Message("user", "x"))
    mem.append(("c",), Message("user", "y"))
    assert mem.get(("a",)) == [] and mem.get(("c",))[0].content == "y"
