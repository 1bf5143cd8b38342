"""The agent's final answer states the computed result it observed (issue 17), and is left alone otherwise."""

from core.agent import ReActAgent
from core.config import ToolSettings
from core.decoding import BUILTIN_PRESETS
from core.tools import build_tools
from tests.test_agent import ScriptedChatModel

CALL = 'Thought: I should multiply.\nAction: calculator\nAction Input: {"expression": "6 * 7"}'


async def _run(outputs, question="What is 6 times 7?", tools=("calculator",)):
    model = ScriptedChatModel(outputs)
    agent = ReActAgent(model, build_tools(ToolSettings(), list(tools)), ToolSettings())
    return await agent.run(persona="You are helpful.", history=[], question=question,
                           decoding=BUILTIN_PRESETS["precise"])


async def test_final_answer_that_ignores_the_observation_carries_it():
    result = await _run([CALL, "Thought: I know the answer\nFinal Answer: It is 40."])
    assert "42" in result.answer and "40" not in result.answer


async def test_final_answer_that_states_the_observation_is_kept():
    result = await _run([CALL, "Thought: I know the answer\nFinal Answer: 6 times 7 is 42."])
    assert result.answer == "6 times 7 is 42."


async def test_no_tool_question_is_untouched():
    result = await _run(["Thought: I know the answer\nFinal Answer: Hello! How can I help?"], question="Hi there")
    assert result.answer == "Hello! How can I help?"


async def test_tool_error_is_not_forced_into_the_answer():
    bad = 'Thought: divide\nAction: calculator\nAction Input: {"expression": "1 / 0"}'
    result = await _run([bad, "Thought: I know the answer\nFinal Answer: It cannot be divided by zero."])
    assert result.answer == "It cannot be divided by zero."
