"""The history repairs of ``gateway/normalize.py``, one rule per test, on canonical requests.

Clients send histories upstream models reject; the CLI repairs them before sending
(``docs/protocol.md`` section 4.3, invariants 1, 2 and 6), and so does the gateway, once, for
every surface.  ``test_cli_wire.py`` checks a few repairs as they reach the wire; these pin each
rule before and after, that a well-formed history passes untouched, and that repairing twice
changes nothing more than repairing once (a stored conversation is normalised again on every
turn, so a repair that kept changing would make the thread id and the cache drift).
"""
from __future__ import annotations

import copy
import dataclasses
import random

import pytest

from gateway import errors
from gateway.canonical import (ChatRequest, Image, Message, Reasoning, SystemBlock, Text, Tool,
                               ToolCall, ToolResult)
from gateway.catalog import Catalog
from gateway.normalize import MISSING_RESULT, merge_same_role, normalize

CATALOG = Catalog.load()
FLASH = CATALOG.resolve("deepseek/deepseek-v4-flash")          # vision False
VISION = CATALOG.resolve("moonshotai/Kimi-K3")                 # vision True
PNG = Image("data:image/png;base64,iVBORw0KGgo=", "image/png")


def req(*messages: Message, model=FLASH, **kw) -> ChatRequest:
    return ChatRequest(model=model, requested_model=model.id, messages=list(messages), **kw)


def norm(*messages: Message, **kw) -> list[Message]:
    return normalize(req(*messages, **kw)).messages


def user(text: str = "go") -> Message:
    return Message("user", [Text(text)])


def calls(*ids_and_names: str) -> Message:
    """``calls("c1:read", "c2:write")``: one assistant turn making those tool calls."""
    return Message("assistant", [ToolCall(i, n, {}) for i, n in (s.split(":") for s in ids_and_names)])


def results(*ids_and_contents: str) -> Message:
    return Message("tool", [ToolResult(i, c) for i, c in (s.split(":") for s in ids_and_contents)])


def answered(messages: list[Message]) -> list[tuple]:
    """The tool results of a history as (call id, tool name, content), in order."""
    return [(p.call_id, p.name, p.content) for m in messages if m.role == "tool" for p in m.parts]


WELL_FORMED = [
    Message("user", [Text("read a.txt and b.txt"), PNG]),
    Message("assistant", [Reasoning("both files", signature="sig"), Text("Reading."),
                          ToolCall("c1", "read_file", {"path": "a.txt"}),
                          ToolCall("c2", "read_file", {"path": "b.txt"})]),
    Message("tool", [ToolResult("c1", "A", name="read_file"),
                     ToolResult("c2", "B", is_error=True, name="read_file")]),
    Message("assistant", [Text("Both read.")]),
    Message("user", [Text("thanks")]),
]


# ---- a well-formed history -----------------------------------------------------------------------

def test_a_well_formed_history_is_left_unchanged():
    before = copy.deepcopy(WELL_FORMED)
    r = req(*copy.deepcopy(WELL_FORMED), model=VISION, system=[SystemBlock("Be brief.")],
            tools=[Tool("read_file", "Read a file", {"type": "object"})])
    assert normalize(r) is r                    # repaired in place, and returned for chaining
    assert r.messages == before
    assert r.system == [SystemBlock("Be brief.")] and [t.name for t in r.tools] == ["read_file"]


# ---- invariant 1: every tool call gets an answer -------------------------------------------------

def test_a_call_without_a_result_is_answered_with_the_placeholder_before_the_next_user_turn():
    got = norm(user("go"), calls("c1:read_file"), user("never mind"))
    assert [m.role for m in got] == ["user", "assistant", "tool", "user"]
    assert got[2] == Message("tool", [ToolResult("c1", MISSING_RESULT, name="read_file")])
    assert MISSING_RESULT == "No result \u2014 the tool call did not complete (interrupted or lost)."


def test_calls_left_open_at_the_end_of_the_history_are_answered_too():
    got = norm(user(), calls("c1:a", "c2:b"))
    assert got[-1] == Message("tool", [ToolResult("c1", MISSING_RESULT, name="a"),
                                       ToolResult("c2", MISSING_RESULT, name="b")])


def test_a_partly_answered_turn_keeps_its_results_and_gets_placeholders_for_the_rest():
    got = norm(user(), calls("c1:a", "c2:b", "c3:c"), results("c2:two"), user("next"))
    assert [m.role for m in got] == ["user", "assistant", "tool", "user"]     # one tool turn
    assert answered(got) == [("c2", "b", "two"), ("c1", "a", MISSING_RESULT), ("c3", "c", MISSING_RESULT)]


def test_a_result_for_a_call_never_made_is_dropped_and_a_turn_of_only_such_results_vanishes():
    got = norm(user(), calls("c1:a"), results("c1:one", "ghost:never called"), user("next"))
    assert answered(got) == [("c1", "a", "one")]
    got = norm(user("first"), results("ghost:never called"), user("second"))
    assert got == [Message("user", [Text("first"), Text("second")])]


def test_a_result_arriving_after_the_next_user_turn_is_too_late():
    """The user spoke, so the call was already answered with the placeholder."""
    got = norm(user(), calls("c1:a"), user("stop"), results("c1:late"))
    assert [m.role for m in got] == ["user", "assistant", "tool", "user"]
    assert answered(got) == [("c1", "a", MISSING_RESULT)]


def test_a_second_result_for_the_same_call_is_dropped():
    got = norm(user(), calls("c1:a"), results("c1:first", "c1:second"), results("c1:third"))
    assert answered(got) == [("c1", "a", "first")]


def test_results_take_the_name_of_the_call_they_answer():
    """Some surfaces (OpenAI's ``tool`` role) carry no name, and a client's own may be stale;
    upstream needs the name of the call (``toolName``)."""
    got = norm(user(), calls("c1:read_file"),
               Message("tool", [ToolResult("c1", "x", name=None)]))
    assert answered(got) == [("c1", "read_file", "x")]
    got = norm(user(), calls("c1:read_file"),
               Message("tool", [ToolResult("c1", "x", name="something_else")]))
    assert answered(got) == [("c1", "read_file", "x")]


def test_pairing_is_per_turn_so_a_reused_call_id_is_answered_again_in_its_own_turn():
    got = norm(user("one"), calls("call_1:a"), results("call_1:first"),
               Message("assistant", [Text("next")]), user("two"),
               calls("call_1:b"), results("call_1:second"))
    assert answered(got) == [("call_1", "a", "first"), ("call_1", "b", "second")]
    got = norm(user("one"), calls("call_1:a"), results("call_1:first"),
               user("two"), calls("call_1:b"), user("three"))
    assert answered(got) == [("call_1", "a", "first"), ("call_1", "b", MISSING_RESULT)]


def test_result_fields_other_than_the_name_are_kept():
    got = norm(user(), calls("c1:shot"),
               Message("tool", [ToolResult("c1", "here", is_error=True, images=[PNG],
                                           cache_control={"type": "ephemeral"})]), model=VISION)
    assert got[2].parts == [ToolResult("c1", "here", is_error=True, images=[PNG], name="shot",
                                       cache_control={"type": "ephemeral"})]


@pytest.mark.parametrize("call", [ToolCall("", "a", {}), ToolCall("c1", "", {})], ids=["no id", "no name"])
def test_a_call_without_an_id_or_a_name_cannot_be_paired_and_is_refused(call):
    with pytest.raises(errors.InvalidRequest, match="non-empty id and name") as info:
        norm(user(), Message("assistant", [call]))
    assert info.value.status == 400 and info.value.param == "messages"


def test_the_same_call_id_twice_in_one_turn_is_refused():
    with pytest.raises(errors.InvalidRequest, match="'c1' appears twice") as info:
        norm(user(), calls("c1:a", "c1:b"))
    assert info.value.param == "messages"


# ---- invariant 2: no empty parts or messages, no two messages of one role in a row ---------------

def test_blank_text_and_reasoning_parts_are_dropped_and_other_parts_kept_whatever_their_content():
    got = norm(Message("user", [Text(""), Text(" \n\t"), Text("q"), Reasoning("  ")]),
               Message("assistant", [Reasoning(""), Text("a"), ToolCall("c1", "t", {})]),
               Message("tool", [ToolResult("c1", "")]), model=VISION)
    assert got == [Message("user", [Text("q")]),
                   Message("assistant", [Text("a"), ToolCall("c1", "t", {})]),
                   Message("tool", [ToolResult("c1", "", name="t")])]      # an empty result is an answer
    assert norm(Message("user", [Text(" "), PNG]), model=VISION) == [Message("user", [PNG])]


def test_messages_left_empty_are_dropped():
    got = norm(user("q"), Message("assistant", [Text("  ")]), Message("assistant", []), user("r"))
    assert got == [Message("user", [Text("q"), Text("r")])]


def test_consecutive_turns_of_one_role_are_merged_in_order():
    got = norm(user("a"), user("b"), Message("assistant", [Text("x")]), Message("assistant", [Text("y")]),
               user("c"))
    assert got == [Message("user", [Text("a"), Text("b")]), Message("assistant", [Text("x"), Text("y")]),
                   Message("user", [Text("c")])]


def test_results_split_over_several_tool_messages_become_one_tool_turn():
    got = norm(user(), calls("c1:a", "c2:b"), results("c1:one"), results("c2:two"), user("next"))
    assert [m.role for m in got] == ["user", "assistant", "tool", "user"]
    assert answered(got) == [("c1", "a", "one"), ("c2", "b", "two")]


def test_merge_same_role_on_its_own_joins_runs_and_keeps_alternation():
    """The Responses codec uses it to turn a run of items into one turn (parallel calls)."""
    got = merge_same_role([calls("c1:a"), calls("c2:b"), results("c1:x"), results("c2:y"), user()])
    assert got == [calls("c1:a", "c2:b"), results("c1:x", "c2:y"), user()]
    assert merge_same_role([]) == []


def test_the_client_s_messages_are_not_emptied_by_the_repair():
    """Parts are filtered into new messages: the decoded request's lists are not cut."""
    original = [Message("user", [Text(""), Text("q")]), Message("user", [Text("r")])]
    normalize(req(*original))
    assert original == [Message("user", [Text(""), Text("q")]), Message("user", [Text("r")])]


# ---- tools ---------------------------------------------------------------------------------------

def test_tool_names_must_be_present_and_unique():
    ok = Tool("read_file", "", {"type": "object"})
    with pytest.raises(errors.InvalidRequest, match="non-empty name") as info:
        normalize(req(user(), tools=[ok, Tool("", "", {})]))
    assert info.value.param == "tools[1].name"
    with pytest.raises(errors.InvalidRequest, match="'read_file' is used twice") as info:
        normalize(req(user(), tools=[ok, Tool("write_file", "", {}), ok]))
    assert info.value.param == "tools[2].name"


# ---- what only matters to a model (skipped when counting tokens) ---------------------------------

def test_a_sendable_history_needs_a_user_or_tool_turn():
    with pytest.raises(errors.InvalidRequest, match="at least one non-empty user message"):
        norm(Message("assistant", [Text("only me")]))
    with pytest.raises(errors.InvalidRequest, match="at least one non-empty user message"):
        norm(Message("user", [Text("   ")]))
    assert norm(user(), calls("c1:a"))[-1].role == "tool"                   # a tool turn will do


def test_images_for_a_text_only_model_are_refused_with_a_pointer_to_a_vision_model():
    for history in ([Message("user", [PNG])],
                    [user(), calls("c1:shot"), Message("tool", [ToolResult("c1", "x", images=[PNG])])]):
        with pytest.raises(errors.InvalidRequest, match="does not accept images") as info:
            norm(*copy.deepcopy(history))
        assert info.value.code == "image_not_supported" and info.value.param == "messages"
        assert norm(*copy.deepcopy(history), model=VISION)                              # vision: fine
        unknown = dataclasses.replace(FLASH, vision=None)
        assert norm(*copy.deepcopy(history), model=unknown)                  # unknown: upstream decides


def test_counting_skips_the_checks_that_only_matter_to_a_model_but_still_repairs():
    r = normalize(req(Message("assistant", [Text("only me"), PNG, ToolCall("c1", "a", {})])),
                  sendable=False)
    assert r.messages == [Message("assistant", [Text("only me"), PNG, ToolCall("c1", "a", {})]),
                          Message("tool", [ToolResult("c1", MISSING_RESULT, name="a")])]
    assert normalize(req(Message("user", [Text("")])), sendable=False).messages == []
    with pytest.raises(errors.InvalidRequest):           # an unpairable call is still refused
        normalize(req(Message("assistant", [ToolCall("", "a", {})])), sendable=False)


# ---- idempotence, over hand-made and generated histories -----------------------------------------

MESSY = [
    Message("user", [Text(""), Text("go")]), user("again"),
    calls("c1:a", "c2:b"), results("c2:two", "ghost:x"), results("c2:dup"),
    Message("assistant", [Text(" ")]), user("next"), results("c1:late"),
    Message("assistant", [Reasoning("hm"), ToolCall("c1", "a", {})]),
]


def test_normalizing_twice_equals_normalizing_once():
    once = normalize(req(*copy.deepcopy(MESSY))).messages
    twice = normalize(req(*copy.deepcopy(once))).messages
    assert twice == once
    assert [m.role for m in once] == ["user", "assistant", "tool", "user", "assistant", "tool"]
    assert answered(once) == [("c2", "b", "two"), ("c1", "a", MISSING_RESULT), ("c1", "a", MISSING_RESULT)]


def random_history(rnd: random.Random) -> list[Message]:
    ids, names = ["c1", "c2", "c3", "call_1"], ["read", "write", "run"]
    messages = []
    for _ in range(rnd.randrange(1, 10)):
        role = rnd.choice(["user", "assistant", "assistant", "tool", "tool"])
        parts = []
        for _ in range(rnd.randrange(4)):
            if role == "user":
                parts.append(rnd.choice([Text(rnd.choice(["", " ", "q"])), PNG]))
            elif role == "assistant":
                parts.append(rnd.choice([Text(rnd.choice(["", "a"])), Reasoning(rnd.choice(["", "r"])),
                                         ToolCall(rnd.choice(ids), rnd.choice(names), {})]))
            else:
                parts.append(ToolResult(rnd.choice(ids), rnd.choice(["", "out"]),
                                        name=rnd.choice([None, "stale"])))
        messages.append(Message(role, parts))
    return messages


def test_generated_histories_come_out_well_formed_and_stay_put_when_normalized_again():
    rnd = random.Random(4_3)
    checked = 0
    for _ in range(400):
        try:
            once = normalize(req(*random_history(rnd), model=VISION), sendable=False).messages
        except errors.InvalidRequest:       # a call id twice in one turn: refused, not repaired
            continue
        checked += 1
        assert normalize(req(*copy.deepcopy(once), model=VISION), sendable=False).messages == once
        assert all(m.parts for m in once)
        assert all(a.role != b.role for a, b in zip(once, once[1:]))
        assert not any(isinstance(p, (Text, Reasoning)) and not p.text.strip() for m in once for p in m.parts)
        for i, m in enumerate(once):        # every call answered by the next turn, exactly once
            if m.role == "tool":
                assert i > 0 and once[i - 1].role == "assistant"
            if m.role != "assistant":
                continue
            want = [(p.id, p.name) for p in m.parts if isinstance(p, ToolCall)]
            got = [(p.call_id, p.name) for p in once[i + 1].parts] if want else []
            assert sorted(got) == sorted(want)
    assert checked > 200
