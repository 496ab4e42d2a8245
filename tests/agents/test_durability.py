"""No agent lost, none run twice: real qcluster workers, real signals, the fake API's request log."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings
from django_q.tasks import async_task

from agents.execution import AgentSink, agent_claim
from agents.models import Agent, AgentEvent, AgentStatus, EntryKind, TranscriptEntry
from agents.runtime.exceptions import LeaseLost
from agents.runtime.loop import INTERRUPTED
from agents.services import agent_cancel, agent_pause, agent_resume, agent_spawn, agents_reap
from budgets.models import UsageRecord
from tests.conftest import processes_matching, wait_for
from tests.fakes.anthropic_server import Fault, Turn, text, tool_use

pytestmark = pytest.mark.e2e
S = AgentStatus

# Short leases so a lost worker is noticed in seconds; the real defaults are in settings.py.
FAST = {"ORCHESTRATOR_LEASE_SECONDS": "2", "ORCHESTRATOR_REAP_SECONDS": "0.5"}


def refreshed(agent: Agent) -> Agent:
    agent.refresh_from_db()
    return agent


def worker_pid(agent: Agent) -> int:
    return int(refreshed(agent).worker.rsplit(":", 1)[1])


def requested(fake, match: str, turn: int, count: int = 1) -> bool:
    return sum(r.turn_index == turn for r in fake.requests_for(match)) >= count


def process_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # exited, not yet reaped
    except OSError:
        return True


def assert_clean_transcript(agent: Agent) -> None:
    """Sequence numbers without gaps, each tool_use answered exactly once, one usage row per reply."""
    entries = list(agent.transcript.order_by("seq"))
    assert [e.seq for e in entries] == list(range(len(entries)))
    tool_uses = [
        b["id"]
        for e in entries
        if e.kind == EntryKind.ASSISTANT
        for b in e.payload["content"]
        if b["type"] == "tool_use"
    ]
    results = [e.payload["tool_use_id"] for e in entries if e.kind == EntryKind.TOOL_RESULT]
    assert sorted(tool_uses) == sorted(results) and len(set(results)) == len(results)
    replies = [e for e in entries if e.kind == EntryKind.ASSISTANT]
    assert UsageRecord.objects.filter(agent=agent).count() == len(replies) == agent.turns


def test_sigkill_mid_stream_the_agent_completes_on_another_worker(workers, fake_anthropic, repo):
    fake_anthropic.script(
        "Survive a crash mid-stream",
        [
            Turn([tool_use("Write", {"file_path": "a.txt", "content": "a\n"})]),
            Turn([text("A slow and thoughtful answer. " * 8)], chunk_delay_s=0.25),
        ],
    )
    workers.start(count=2, workers_per_cluster=1, env=FAST)
    agent = agent_spawn(role="implementer", task="Survive a crash mid-stream", repo_path=str(repo))
    wait_for(lambda: requested(fake_anthropic, "Survive a crash mid-stream", 1), timeout=30, message="turn 1")
    killed = worker_pid(agent)
    os.kill(killed, signal.SIGKILL)

    wait_for(lambda: refreshed(agent).is_finished, timeout=60, message=f"completion; logs:\n{workers.logs()}")
    assert agent.status == S.COMPLETED, agent.status_reason
    assert worker_pid(agent) != killed
    assert [r.turn_index for r in fake_anthropic.requests_for("Survive a crash mid-stream")] == [0, 1, 1]
    assert_clean_transcript(agent)
    assert AgentEvent.objects.filter(agent=agent, data__reason__icontains="stopped; queued again").exists()


def test_sigkill_mid_bash_reports_the_call_as_interrupted_and_leaves_no_process(
    workers, fake_anthropic, repo
):
    marker = "sleep 31.4159"
    fake_anthropic.script(
        "Survive a crash mid-command",
        [
            Turn([tool_use("Bash", {"command": f"touch started.txt && {marker} && touch finished.txt"})]),
            Turn([text("The command was interrupted; moving on.")]),
        ],
    )
    workers.start(count=2, workers_per_cluster=1, env=FAST)
    agent = agent_spawn(role="implementer", task="Survive a crash mid-command", repo_path=str(repo))
    worktree = Path(refreshed(agent).workspace.path)
    wait_for(lambda: (worktree / "started.txt").exists(), timeout=30, message="the command to start")
    os.kill(worker_pid(agent), signal.SIGKILL)

    wait_for(lambda: refreshed(agent).is_finished, timeout=60, message=f"completion; logs:\n{workers.logs()}")
    assert agent.status == S.COMPLETED, agent.status_reason
    last_request = fake_anthropic.requests_for("Survive a crash mid-command")[-1].body
    result = last_request["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["is_error"] is True and result["content"] == INTERRUPTED
    assert_clean_transcript(agent)
    assert processes_matching(marker) == []  # the orphaned command was cleared by the next worker
    assert not (worktree / "finished.txt").exists()


def test_worker_killed_at_every_attempt_fails_after_the_limit_without_looping(workers, fake_anthropic, repo):
    fake_anthropic.script("Crash every time", [Turn([text("never finishes " * 10)], chunk_delay_s=1)])
    workers.start(count=1, workers_per_cluster=1, env={**FAST, "ORCHESTRATOR_MAX_ATTEMPTS": "2"})
    agent = agent_spawn(role="implementer", task="Crash every time", repo_path=str(repo))
    for attempt in (1, 2):
        wait_for(
            lambda n=attempt: requested(fake_anthropic, "Crash every time", 0, n),
            timeout=30,
            message=f"attempt {attempt}",
        )
        os.kill(worker_pid(agent), signal.SIGKILL)

    wait_for(lambda: refreshed(agent).is_finished, timeout=30, message="failure")
    assert agent.status == S.FAILED
    assert agent.status_reason.startswith("Gave up after 2 attempts: the worker running it stopped each time")
    time.sleep(3)  # nothing runs it again
    assert len(fake_anthropic.requests_for("Crash every time")) == 2
    assert refreshed(agent).status == S.FAILED


def test_two_workers_receiving_the_same_agent_run_it_once(workers, fake_anthropic, repo):
    fake_anthropic.script(
        "Run me once",
        [Turn([tool_use("Glob", {"pattern": "*"})], delay_s=0.3), Turn([text("Ran once.")], delay_s=0.3)],
    )
    workers.start(count=2, workers_per_cluster=2)
    agent = agent_spawn(role="implementer", task="Run me once", repo_path=str(repo))
    for _ in range(3):  # duplicate deliveries, as an at-least-once broker may make
        async_task("agents.tasks.run_agent", agent.pk)

    wait_for(lambda: refreshed(agent).is_finished, timeout=30, message="completion")
    time.sleep(1)
    assert agent.status == S.COMPLETED and agent.attempts == 1
    assert [r.turn_index for r in fake_anthropic.requests_for("Run me once")] == [0, 1]
    assert_clean_transcript(agent)


def test_errors_and_dropped_streams_are_survived_and_usage_counted_once(workers, fake_anthropic, repo):
    faults = {
        "Overloaded thrice": [Fault(529, retry_after=0.05)] * 3,
        "Rate limited": [Fault(429, retry_after=1.0)],
        "Error event mid-stream": [Fault("error_event")],
        "Connection cut mid-stream": [Fault("drop")],
    }
    for task, turn_faults in faults.items():
        fake_anthropic.script(
            task,
            [
                Turn(
                    [text(f"{task}: done")], usage={"input_tokens": 7, "output_tokens": 3}, faults=turn_faults
                )
            ],
        )
    workers.start(count=1, workers_per_cluster=4)
    agents = [agent_spawn(role="implementer", task=task, repo_path=str(repo)) for task in faults]

    wait_for(lambda: all(refreshed(a).is_finished for a in agents), timeout=60, message="all agents")
    for agent, (task, turn_faults) in zip(agents, faults.items(), strict=True):
        assert agent.status == S.COMPLETED, f"{task}: {agent.status_reason}"
        assert len(fake_anthropic.requests_for(task)) == len(turn_faults) + 1
        assert (agent.turns, agent.input_tokens, agent.output_tokens) == (1, 7, 3)
        assert_clean_transcript(agent)
    limited = fake_anthropic.requests_for("Rate limited")
    assert limited[1].received_at - limited[0].received_at >= 1.0  # retry-after honoured


def test_an_outage_longer_than_the_retry_window_parks_agents_and_loses_none(workers, fake_anthropic, repo):
    tasks = [f"Work through the outage {n}" for n in range(3)]
    for task in tasks:
        fake_anthropic.script(
            task, [Turn([text("Back online.")], usage={"input_tokens": 5, "output_tokens": 2})]
        )
    fake_anthropic.set_outage(529, retry_after=0.2)
    workers.start(
        count=1,
        workers_per_cluster=2,
        env={**FAST, "ORCHESTRATOR_API_RETRY_SECONDS": "1", "ORCHESTRATOR_PARK_SECONDS": "1"},
    )
    agents = [agent_spawn(role="implementer", task=task, repo_path=str(repo)) for task in tasks]

    def parked() -> bool:
        return all(refreshed(a).status == S.WAITING and a.wake_at and a.api_failures >= 2 for a in agents)

    wait_for(parked, timeout=60, message=f"agents parked twice; logs:\n{workers.logs()}")
    assert all("Parked; trying again at" in a.status_reason for a in agents)
    fake_anthropic.set_outage(None)

    wait_for(lambda: all(refreshed(a).is_finished for a in agents), timeout=60, message="recovery")
    for agent in agents:
        assert agent.status == S.COMPLETED and agent.result == "Back online."
        assert (agent.turns, agent.input_tokens) == (1, 5) and agent.api_failures == 0
        assert_clean_transcript(agent)


def test_cancel_during_a_long_bash_command_kills_its_process_group_within_a_second(
    workers, fake_anthropic, repo
):
    marker = "sleep 60.4321"
    fake_anthropic.script(
        "Sleep for a minute", [Turn([tool_use("Bash", {"command": f"{marker}; echo done"})])]
    )
    workers.start()
    agent = agent_spawn(role="implementer", task="Sleep for a minute", repo_path=str(repo))
    wait_for(lambda: processes_matching(marker), timeout=30, message="the sleep to start")

    cancelled_at = time.monotonic()
    agent_cancel(agent=agent)
    wait_for(
        lambda: not processes_matching(marker), timeout=5, interval=0.02, message="the sleep to be killed"
    )
    assert time.monotonic() - cancelled_at < 1.0
    assert refreshed(agent).status == S.CANCELLED
    wait_for(
        lambda: (
            not TranscriptEntry.objects.filter(agent=agent, kind=EntryKind.TOOL_RESULT).exists()
            and refreshed(agent).lease_token is None
        ),
        timeout=5,
    )


def test_pause_and_resume_mid_command_continue_the_same_conversation(workers, fake_anthropic, repo):
    marker = "sleep 30.556"
    fake_anthropic.script(
        "Pause me",
        [
            Turn([text("Starting a long job."), tool_use("Bash", {"command": marker})]),
            Turn([text("Resumed after the interruption.")]),
        ],
    )
    workers.start()
    agent = agent_spawn(role="implementer", task="Pause me while I work", repo_path=str(repo))
    wait_for(lambda: processes_matching(marker), timeout=30, message="the command to start")
    paused_at = time.monotonic()
    agent_pause(agent=agent)
    wait_for(lambda: not processes_matching(marker), timeout=5, interval=0.02, message="the command to stop")
    assert time.monotonic() - paused_at < 1.0
    assert refreshed(agent).status == S.PAUSED

    agent_resume(agent=agent)
    wait_for(lambda: refreshed(agent).is_finished, timeout=30, message="completion after resume")
    assert agent.status == S.COMPLETED and agent.result == "Resumed after the interruption."
    first, resumed = fake_anthropic.requests_for("Pause me")
    assert resumed.body["messages"][:2] == [
        first.body["messages"][0],
        {"role": "assistant", "content": resumed.body["messages"][1]["content"]},
    ]
    assert resumed.body["messages"][-1]["content"][0]["content"] == INTERRUPTED
    assert_clean_transcript(agent)
    kinds = list(AgentEvent.objects.filter(agent=agent, kind="status").values_list("data__to", flat=True))
    assert kinds == ["pending", "running", "paused", "pending", "running", "completed"]


def test_pause_mid_stream_frees_the_worker_within_a_second(workers, fake_anthropic, repo):
    fake_anthropic.script("Slow stream", [Turn([text("word " * 40)], chunk_delay_s=2)])
    fake_anthropic.script("Next in line", [Turn([text("My turn.")])])
    workers.start(count=1, workers_per_cluster=1)
    slow = agent_spawn(role="implementer", task="Slow stream", repo_path=str(repo))
    wait_for(lambda: requested(fake_anthropic, "Slow stream", 0), timeout=30, message="the slow stream")
    time.sleep(0.3)
    agent_pause(agent=slow)
    paused_at = time.time()
    waiting = agent_spawn(role="implementer", task="Next in line", repo_path=str(repo))

    wait_for(lambda: refreshed(waiting).is_finished, timeout=30, message="the next agent")
    assert fake_anthropic.requests_for("Next in line")[0].received_at - paused_at < 1.0
    assert refreshed(slow).status == S.PAUSED and slow.turns == 0


def test_sigterm_to_a_worker_releases_its_agent_to_another_at_once(workers, fake_anthropic, repo):
    fake_anthropic.script("Move me", [Turn([text("moving " * 20)], chunk_delay_s=0.5)])
    # default 30 s lease: only a release is this fast
    workers.start(count=2, workers_per_cluster=1, env={"ORCHESTRATOR_REAP_SECONDS": "0.5"})
    agent = agent_spawn(role="implementer", task="Move me", repo_path=str(repo))
    wait_for(lambda: requested(fake_anthropic, "Move me", 0), timeout=30, message="the stream")
    first = worker_pid(agent)
    os.kill(first, signal.SIGTERM)
    signalled_at = time.time()

    wait_for(
        lambda: requested(fake_anthropic, "Move me", 0, 2),
        timeout=10,
        message=lambda: (
            f"the next worker: {refreshed(agent).status} {agent.status_reason}\n{workers.logs()[-3000:]}"
        ),
    )
    assert fake_anthropic.requests_for("Move me")[1].received_at - signalled_at < 2.0
    wait_for(lambda: refreshed(agent).is_finished, timeout=60, message="completion")
    assert agent.status == S.COMPLETED and worker_pid(agent) != first
    assert AgentEvent.objects.filter(agent=agent, data__reason__icontains="shut down; queued again").exists()
    wait_for(lambda: process_gone(first), timeout=5, message="the signalled worker to exit")


def test_a_worker_that_lost_its_lease_cannot_write(agents_env, repo, settings):
    agent = agent_spawn(role="implementer", task="Contested", repo_path=str(repo))
    old = agent_claim(agent_id=agent.pk)
    old_sink = AgentSink(agent=refreshed(agent), token=old)
    Agent.objects.filter(pk=agent.pk).update(lease_expires_at="2000-01-01T00:00:00Z")
    new = agent_claim(agent_id=agent.pk)
    assert new is not None and new != old

    with pytest.raises(LeaseLost):
        old_sink.record_user([{"type": "text", "text": "stale write"}])
    with pytest.raises(LeaseLost):
        old_sink.fence()  # its heartbeat is refused too
    assert not old_sink.holds_lease()
    assert not TranscriptEntry.objects.filter(agent=agent).exists()
    assert refreshed(agent).lease_token == new and agent.attempts == 2


def test_reaper_requeues_expired_leases_fails_exhausted_ones_and_wakes_parked(agents_env, repo, settings):
    settings.ORCHESTRATOR_MAX_ATTEMPTS = 2
    lost, exhausted, parked, resting = (
        agent_spawn(role="implementer", task=f"Agent {n}", repo_path=str(repo)) for n in range(4)
    )
    past, future = "2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z"
    token = "00000000-0000-0000-0000-000000000001"
    Agent.objects.filter(pk=lost.pk).update(
        status=S.RUNNING, lease_token=token, lease_expires_at=past, attempts=1
    )
    Agent.objects.filter(pk=exhausted.pk).update(
        status=S.RUNNING, lease_token=token, lease_expires_at=past, attempts=2
    )
    Agent.objects.filter(pk=parked.pk).update(status=S.WAITING, wake_at=past)
    Agent.objects.filter(pk=resting.pk).update(status=S.WAITING, wake_at=future)

    report = agents_reap()

    assert (report.requeued, report.failed, report.woken) == ([lost.pk], [exhausted.pk], [parked.pk])
    assert [refreshed(a).status for a in (lost, exhausted, parked, resting)] == [
        S.PENDING,
        S.FAILED,
        S.PENDING,
        S.WAITING,
    ]
    assert agents_reap() == type(report)([], [], [])  # idempotent


def test_reaper_resends_pending_agents_whose_queue_message_was_lost(agents_env, repo):
    from django_q.brokers import get_broker

    agent = agent_spawn(role="implementer", task="Lost in the queue", repo_path=str(repo))
    broker = get_broker()
    broker.purge_queue()  # the message is gone, as when a worker dies between dequeue and claim
    assert agents_reap().resent == []  # not stale yet
    Agent.objects.filter(pk=agent.pk).update(updated_at="2000-01-01T00:00:00Z")

    assert agents_reap().resent == [agent.pk]
    assert broker.queue_size() == 1
    assert agents_reap().resent == []  # once


def test_reaper_schedule_is_installed(db):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="orchestrator-reaper")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == ("agents.tasks.reap_agents", "I", 1)


def test_sigterm_to_a_cluster_hands_its_agents_to_another_cluster(workers, fake_anthropic, repo):
    fake_anthropic.script("Outlive my cluster", [Turn([text("moving " * 20)], chunk_delay_s=0.5)])
    (doomed,) = workers.start(count=1, workers_per_cluster=1, env={"ORCHESTRATOR_REAP_SECONDS": "0.5"})
    agent = agent_spawn(role="implementer", task="Outlive my cluster", repo_path=str(repo))
    wait_for(lambda: requested(fake_anthropic, "Outlive my cluster", 0), timeout=30, message="the stream")
    workers.start(count=1, workers_per_cluster=1, env={"ORCHESTRATOR_REAP_SECONDS": "0.5"})
    time.sleep(4)  # let the second cluster come up

    doomed.send_signal(signal.SIGTERM)
    signalled_at = time.time()
    # ORM broker: the released agent is picked up by the other cluster at once. Redis broker: a
    # message sent while a cluster stops can still be taken by its blocking pop and lost; the
    # reaper re-sends it (two leases later), so it is late but never lost (docs/architecture.md).
    fast = not settings.REDIS_URL
    wait_for(
        lambda: requested(fake_anthropic, "Outlive my cluster", 0, 2),
        timeout=10 if fast else 120,
        message=lambda: (
            f"the other cluster: {refreshed(agent).status} {agent.status_reason}\n{workers.logs()[-4000:]}"
        ),
    )
    if fast:  # not the 30 s lease: released and queued again as the cluster stopped
        assert fake_anthropic.requests_for("Outlive my cluster")[1].received_at - signalled_at < 5.0
    if fast:
        doomed.wait(timeout=30)  # with Redis django-q2's stop can hang on a message it took meanwhile
    wait_for(lambda: refreshed(agent).is_finished, timeout=60, message="completion")
    assert agent.status == S.COMPLETED
    assert_clean_transcript(agent)
