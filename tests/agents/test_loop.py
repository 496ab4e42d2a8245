"""The loop against the real SDK and the fake API: stop reasons, API failures, resuming."""

from __future__ import annotations

import pytest

from agents.models import Agent, AgentStatus, EntryKind, TranscriptEntry
from agents.runtime.loop import CUT_OFF, INTERRUPTED
from agents.runtime.transcript import rebuild
from agents.services import agent_spawn
from budgets.models import UsageRecord
from tests.conftest import run_here
from tests.fakes.anthropic_server import Fault, Turn, text, tool_use


@pytest.fixture
def spawn(agents_env, repo):
    def make(task: str, role: str = "implementer") -> Agent:
        return agent_spawn(role=role, task=task, repo_path=str(repo))

    return make


def test_refusal_ends_the_agent_with_the_refusal_shown(agents_env, spawn):
    agents_env.script("Do something bad", [Turn([text("I can't help with that.")], stop_reason="refusal")])
    agent = run_here(spawn("Do something bad"))
    assert agent.status == AgentStatus.FAILED
    assert "The model refused: I can't help with that." in agent.status_reason


def test_max_tokens_asks_the_model_to_continue(agents_env, spawn):
    agents_env.script(
        "Write a long essay",
        [Turn([text("Part one...")], stop_reason="max_tokens"), Turn([text("...and the end.")])],
    )
    agent = run_here(spawn("Write a long essay"))
    assert agent.status == AgentStatus.COMPLETED
    second = agents_env.requests_for("Write a long essay")[1].body["messages"]
    assert second[-1] == {"role": "user", "content": [{"type": "text", "text": CUT_OFF}]}


def test_pause_turn_sends_the_content_back_to_continue(agents_env, spawn):
    agents_env.script(
        "Research a topic",
        [Turn([text("Searching...")], stop_reason="pause_turn"), Turn([text("Found it.")])],
    )
    agent = run_here(spawn("Research a topic"))
    assert agent.status == AgentStatus.COMPLETED and agent.result == "Found it."
    assert agents_env.requests_for("Research a topic")[1].body["messages"][-1]["role"] == "assistant"


def test_a_permanent_api_error_fails_the_agent_with_the_api_message(agents_env, spawn):
    agents_env.script(
        "Use a bad key", [Turn([text("never")], faults=[Fault(401, message="invalid x-api-key")])]
    )
    agent = run_here(spawn("Use a bad key"))
    assert agent.status == AgentStatus.FAILED
    assert agent.status_reason == "The API refused the request (401): invalid x-api-key"
    assert not UsageRecord.objects.exists()


def test_overloaded_and_mid_stream_failures_are_retried_and_counted_once(agents_env, spawn):
    agents_env.script(
        "Survive faults",
        [
            Turn(
                [text("Made it.")],
                usage={"input_tokens": 10, "output_tokens": 5},
                faults=[Fault(529, retry_after=0.01), Fault("error_event"), Fault("drop")],
            )
        ],
    )
    agent = run_here(spawn("Survive faults"))
    assert agent.status == AgentStatus.COMPLETED, agent.status_reason
    assert [r.status for r in agents_env.requests_for("Survive faults")][-1] == 200
    assert len(agents_env.requests_for("Survive faults")) == 4
    assert UsageRecord.objects.get().input_tokens == 10
    assert agent.input_tokens == 10 and agent.turns == 1


def test_resume_reports_an_interrupted_tool_call_instead_of_running_it_again(agents_env, spawn, repo):
    agents_env.script(
        "Append a line",
        [
            Turn([tool_use("Bash", {"command": "echo line >> log.txt"}, id="toolu_first")]),
            Turn([text("Checked: the append may or may not have happened.")]),
        ],
    )
    agent = spawn("Append a line to log.txt")
    # A previous worker stored the reply and started the call, then died before its result.
    TranscriptEntry.objects.create(
        agent=agent, seq=0, kind=EntryKind.USER, payload={"content": [{"type": "text", "text": agent.task}]}
    )
    TranscriptEntry.objects.create(
        agent=agent,
        seq=1,
        kind=EntryKind.ASSISTANT,
        payload={
            "content": [{"type": "tool_use", "id": "toolu_first", "name": "Bash", "input": {"command": "x"}}]
        },
    )
    TranscriptEntry.objects.create(
        agent=agent,
        seq=2,
        kind=EntryKind.TOOL_CALL,
        payload={"id": "toolu_first", "name": "Bash", "input": {}},
    )
    Agent.objects.filter(pk=agent.pk).update(turns=1)

    agent = run_here(agent)

    assert agent.status == AgentStatus.COMPLETED, agent.status_reason
    result = agent.transcript.get(kind=EntryKind.TOOL_RESULT).payload
    assert result == {"tool_use_id": "toolu_first", "content": INTERRUPTED, "is_error": True}
    requests = agents_env.requests_for("Append a line")
    assert [r.turn_index for r in requests] == [1]  # only the next turn: nothing replayed
    assert not (repo / "log.txt").exists()


def test_rebuild_merges_tool_results_and_mail_into_one_user_message():
    rebuilt = rebuild(
        [
            ("user", {"content": [{"type": "text", "text": "task"}]}),
            ("assistant", {"content": [{"type": "tool_use", "id": "a", "name": "Read", "input": {}}]}),
            ("tool_call", {"id": "a", "name": "Read", "input": {}}),
            ("tool_result", {"tool_use_id": "a", "content": "ok", "is_error": False}),
            ("user", {"content": [{"type": "text", "text": "mail"}]}),
        ]
    )
    assert rebuilt.interrupted == set()
    assert rebuilt.messages[-1] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "ok"},
            {"type": "text", "text": "mail"},
        ],
    }


def test_max_turns_fails_the_agent_before_spending_more(agents_env, spawn):
    from agents.models import Role

    Role.objects.filter(name="implementer").update(max_turns=2)
    agents_env.script(
        "Loop forever",
        [
            Turn([tool_use("Glob", {"pattern": "*"})]),
            Turn([tool_use("Glob", {"pattern": "*"})]),
            Turn([text("x")]),
        ],
    )
    agent = run_here(spawn("Loop forever"))
    assert agent.status == AgentStatus.FAILED
    assert agent.status_reason == "Reached the limit of 2 model calls."
    assert len(agents_env.requests_for("Loop forever")) == 2


def test_running_time_limit_stops_before_the_next_model_call(agents_env, spawn):
    from agents.models import Role

    Role.objects.filter(name="implementer").update(max_run_seconds=1)
    agents_env.script(
        "Take your time",
        [Turn([tool_use("Bash", {"command": "sleep 1.2"})]), Turn([text("never asked")])],
    )
    agent = run_here(spawn("Take your time"))
    assert agent.status == AgentStatus.FAILED
    assert agent.status_reason == "Reached the limit of running time for its role."
    assert len(agents_env.requests_for("Take your time")) == 1
    assert agent.run_seconds >= 1.2


def test_huge_output_and_endless_commands_give_bounded_clear_results(agents_env, spawn):
    agents_env.script(
        "Misbehaving commands",
        [
            Turn(
                [
                    tool_use("Bash", {"command": "head -c 50000000 /dev/zero | tr '\\0' a"}),
                    tool_use("Bash", {"command": "sleep 100.77", "timeout": 500}),
                    tool_use("Bash", {"command": "echo hi", "timeout": "soon"}),
                ]
            ),
            Turn([text("Survived.")]),
        ],
    )
    agent = run_here(spawn("Misbehaving commands"))
    assert agent.status == AgentStatus.COMPLETED
    huge, endless, invalid = [
        e.payload for e in agent.transcript.filter(kind=EntryKind.TOOL_RESULT).order_by("seq")
    ]
    assert len(huge["content"]) < 100_000 and "bytes omitted" in huge["content"] and not huge["is_error"]
    assert endless["is_error"] and "timed out after 500 ms" in endless["content"]
    assert invalid["is_error"] and "Invalid input for Bash" in invalid["content"]


def test_retry_of_a_failed_agent_resumes_from_its_transcript(agents_env, spawn, repo):
    from agents.services import agent_retry

    agents_env.script(
        "Fail then retry",
        [
            Turn([tool_use("Write", {"file_path": "step1.txt", "content": "done\n"})]),
            Turn([text("Finished after the retry.")], faults=[Fault(400, message="temporary policy hiccup")]),
        ],
    )
    agent = run_here(spawn("Fail then retry"))
    assert agent.status == AgentStatus.FAILED and "temporary policy hiccup" in agent.status_reason

    agent_retry(agent=agent)
    agent = run_here(agent)

    assert agent.status == AgentStatus.COMPLETED and agent.result == "Finished after the retry."
    assert [r.turn_index for r in agents_env.requests_for("Fail then retry")] == [0, 1, 1]
    assert agent.transcript.filter(kind=EntryKind.TOOL_CALL).count() == 1  # step 1 not repeated
    assert UsageRecord.objects.filter(agent=agent).count() == 2
