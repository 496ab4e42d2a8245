"""Running an agent in a worker: claim it, rebuild its conversation, loop, and finish.

The database decides who runs an agent, not the queue: a worker claims the agent row with one
conditional UPDATE that writes a fencing token and a lease expiry. Every later write checks that
token in the same transaction, and a heartbeat thread extends the lease while the agent runs. A
second delivery of the same task finds the agent claimed and does nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Max, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents import hooks, workspaces
from agents.approvals import approval_request
from agents.errors import InvalidTransition, OrchestratorError
from agents.events import MAX_OUTPUT, Kind, bounded, event_record, tool_activity
from agents.lifecycle import restore_lost_worktree
from agents.merges import file_touched, merges_after_completion
from agents.models import (
    Agent,
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    EntryKind,
    Message,
    MessageKind,
    PermissionRule,
    Role,
    TranscriptEntry,
    WaitingFor,
    Workspace,
)
from agents.permissions import decide
from agents.runtime.anthropic_model import AnthropicModel
from agents.runtime.exceptions import (
    AgentStop,
    AwaitingApproval,
    Cancelled,
    LeaseLost,
    ModelUnavailable,
    OutOfBudget,
    Paused,
    Shutdown,
)
from agents.runtime.loop import AgentLoop, Limits
from agents.runtime.protocols import Authorization, ModelReply, Request
from agents.runtime.transcript import rebuild
from agents.services import (
    agent_transition,
    agent_wake_if_ready,
    agents_unfinished_children,
    lease_expiry,
    report_to_parent,
)
from agents.tasks import enqueue_agent_run
from agents.tools.base import ToolResult
from agents.tools.registry import toolbox_for
from agents.tools.shell import kill_processes_in
from budgets.models import Reservation
from budgets.pricing import MILLION, price_for_model
from budgets.services import (
    budget_has_room,
    budget_release,
    budget_release_stale,
    budget_reserve,
    budget_settle,
    usage_record,
)

log = logging.getLogger(__name__)
S = AgentStatus
HOST = socket.gethostname()
PARK_MAX_SECONDS = 600
TEXT_FLUSH_SECONDS = 0.1
WRITING_TOOLS = {"Write", "Edit"}


def agent_run(*, agent_id: int) -> None:
    """The task body: run the agent until it completes, waits or fails, if we can claim it."""
    token = agent_claim(agent_id=agent_id)
    if token is None:
        log.info("agent %s: not claimable (already running elsewhere or not pending); skipped", agent_id)
        return
    AgentRun(agent_id=agent_id, token=token).execute()


def agent_claim(*, agent_id: int) -> uuid.UUID | None:
    """Claim a pending agent, or a running one whose lease expired. Returns our fencing token."""
    now = timezone.now()
    token = uuid.uuid4()
    worker = f"{HOST}:{os.getpid()}"
    with transaction.atomic():
        previous = Agent.objects.filter(pk=agent_id).values_list("status", flat=True).first()
        claimed = Agent.objects.filter(
            Q(status=S.PENDING) | Q(status=S.RUNNING, lease_expires_at__lt=now), pk=agent_id
        ).update(
            status=S.RUNNING,
            status_reason="",
            lease_token=token,
            lease_expires_at=lease_expiry(),
            attempts=F("attempts") + 1,
            worker=worker,
            started_at=Coalesce(F("started_at"), Value(now)),
            updated_at=now,
        )
        if not claimed:
            return None
        event_record(
            agent_id,
            Kind.STATUS,
            {"from": previous, "to": S.RUNNING, "reason": f"claimed by {worker}"},
            activity="starting",
        )
    return token


@functools.cache
def anthropic_client() -> anthropic.Anthropic:
    """One client per worker process (its connection pool is reused across agents)."""
    return anthropic.Anthropic(
        api_key=settings.ANTHROPIC_API_KEY or "no-key-configured",
        base_url=settings.ANTHROPIC_BASE_URL or None,
        max_retries=2,
    )


class AgentSink:
    """Stores each step of a run, fenced by the lease token; tells the loop when to stop."""

    def __init__(self, *, agent: Agent, token: uuid.UUID) -> None:
        self.agent = agent
        self.token = token
        last = agent.transcript.aggregate(last=Max("seq"))["last"]
        self.next_seq = 0 if last is None else last + 1
        # Set when the run must stop (cancel, pause, lost lease, shutdown); Bash and the model
        # stream poll it, and `on_stop` callbacks (closing the stream) run when it is set.
        self.stop = threading.Event()
        self.shutting_down = False
        self.on_stop: list[Callable[[], None]] = []
        # Budget: the reservation held for the call in flight, and what bounds the next one.
        self.reservation: Reservation | None = None
        self.price = price_for_model(model=agent.model).price
        self.known_input_tokens: int | None = None  # exact tokens of the conversation so far...
        self.known_input_bytes = 0  # ...and its size in bytes when they were counted
        self.request_bytes = 0
        # Streamed text waits here until TEXT_FLUSH_SECONDS have passed, then becomes one event.
        self.text_buffer: list[str] = []
        self.text_since = 0.0
        self.tool_names: dict[str, str] = {}
        self.tool_paths: dict[str, str] = {}

    # --- fencing and control ---
    def request_stop(self, *, shutdown: bool = False) -> None:
        self.shutting_down = self.shutting_down or shutdown
        self.stop.set()
        for callback in self.on_stop:
            callback()

    def raise_if_stopped(self) -> None:
        """Cheap (no query unless a stop was requested): called between stream events."""
        if self.stop.is_set():
            raise self._why_stopped()

    def fence(self) -> None:
        """Extend our lease if we still hold it; otherwise raise why we must stop."""
        if self.shutting_down:
            raise Shutdown("The worker is shutting down.")
        held = Agent.objects.filter(pk=self.agent.pk, lease_token=self.token, status=S.RUNNING).update(
            lease_expires_at=lease_expiry()
        )
        if not held:
            self.request_stop()
            raise self._why_stopped()

    def _why_stopped(self) -> AgentStop:
        if self.shutting_down:
            return Shutdown("The worker is shutting down.")
        row = (
            Agent.objects.filter(pk=self.agent.pk).values("status", "status_reason", "lease_token").first()
            or {}
        )
        if row.get("status") == S.CANCELLED:
            return Cancelled(row.get("status_reason") or "Cancelled.")
        if row.get("status") == S.PAUSED:
            return Paused(row.get("status_reason") or "Paused.")
        if row.get("status") == S.RUNNING and row.get("lease_token") == self.token:
            return LeaseLost("Stopped for an unknown reason while still holding the lease.")
        return LeaseLost(f"Agent {self.agent.pk}: another worker holds the lease now.")

    def holds_lease(self) -> bool:
        return Agent.objects.filter(pk=self.agent.pk, lease_token=self.token, status=S.RUNNING).exists()

    def check_control(self) -> None:
        """Between steps: no query. The heartbeat turns a cancel, pause or lost lease into `stop`
        within a poll, and the next write is fenced anyway."""
        self.raise_if_stopped()

    def should_stop(self) -> bool:
        return self.stop.is_set()

    # --- budget ---
    def reserve(self, request: Request) -> None:
        """Reserve the worst case: input tokens bounded by what the API counted for the
        conversation so far plus one token per byte added since, and max_tokens of output."""
        self.request_bytes = len(
            json.dumps([request.system, request.messages, request.tools], separators=(",", ":")).encode()
        )
        if self.known_input_tokens is None:
            input_bound = self.request_bytes
        else:
            input_bound = self.known_input_tokens + max(0, self.request_bytes - self.known_input_bytes) + 64
        output_bound = settings.ORCHESTRATOR_MAX_TOKENS
        input_price = max(self.price.input_per_mtok, self.price.cache_write_5m_per_mtok)
        usd = (input_bound * input_price + output_bound * self.price.output_per_mtok) / MILLION
        self.reservation = budget_reserve(agent=self.agent, usd=usd, tokens=input_bound + output_bound)

    def release(self) -> None:
        self.flush_text(quietly=True)
        if self.reservation is not None:
            budget_release(reservation=self.reservation)
            self.reservation = None

    # --- recording ---
    def _append(self, kind: str, payload: dict[str, Any], duration_ms: int | None = None) -> TranscriptEntry:
        entry = TranscriptEntry.objects.create(
            agent=self.agent, seq=self.next_seq, kind=kind, payload=payload, duration_ms=duration_ms
        )
        self.next_seq += 1
        return entry

    def _event(self, kind: str, data: dict[str, Any], *, activity: str | None = None) -> None:
        """An event for the live log, fenced by our lease (a stale worker records nothing)."""
        if event_record(self.agent.pk, kind, data, lease_token=self.token, activity=activity) is None:
            self.request_stop()
            raise self._why_stopped()

    def on_text(self, chunk: str) -> None:
        """Streamed text reaches the dashboard in chunks of at most TEXT_FLUSH_SECONDS."""
        if not self.text_buffer:
            self.text_since = time.monotonic()
        self.text_buffer.append(chunk)
        if time.monotonic() - self.text_since >= TEXT_FLUSH_SECONDS:
            self.flush_text()

    def flush_text(self, *, quietly: bool = False) -> None:
        if not self.text_buffer:
            return
        text, self.text_buffer = "".join(self.text_buffer), []
        try:
            self._event(Kind.TEXT, {"text": text}, activity="writing")
        except AgentStop:
            if not quietly:
                raise

    def record_reply(self, reply: ModelReply) -> None:
        self.flush_text()
        with transaction.atomic():
            self.fence()
            entry = self._append(
                EntryKind.ASSISTANT,
                {
                    "content": reply.content,
                    "stop_reason": reply.stop_reason,
                    "model": reply.model,
                    "message_id": reply.message_id,
                    "request_id": reply.request_id,
                    "usage": reply.usage,
                    "retries": reply.retries,
                },
                duration_ms=reply.duration_ms,
            )
            usage = usage_record(
                agent=self.agent,
                entry=entry,
                model=reply.model or self.agent.model,
                usage=reply.usage,
                turns=F("turns") + 1,
                api_failures=0,
            )
            tokens = (
                usage.input_tokens
                + usage.cache_write_5m_tokens
                + usage.cache_write_1h_tokens
                + usage.cache_read_tokens
                + usage.output_tokens
            )
            if self.reservation is not None:
                budget_settle(reservation=self.reservation, usd=usage.cost_usd, tokens=tokens)
                self.reservation = None
            self._event(
                Kind.USAGE,
                {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_write_tokens": usage.cache_write_5m_tokens + usage.cache_write_1h_tokens,
                    "cache_read_tokens": usage.cache_read_tokens,
                    "cost_usd": str(usage.cost_usd),
                    "model": usage.model,
                },
                activity="thinking",
            )
        # What the API counted bounds the next request's input exactly, up to what is added.
        self.known_input_tokens = tokens
        self.known_input_bytes = self.request_bytes + len(
            json.dumps(reply.content, separators=(",", ":")).encode()
        )

    def authorize(self, tool_use: dict[str, Any]) -> Authorization:
        """The project's rules and the agent's mode decide; a person decides what they ask for."""
        name, tool_input = tool_use["name"], tool_use.get("input")
        existing = ApprovalRequest.objects.filter(agent=self.agent, tool_use_id=tool_use["id"]).first()
        if existing is None:
            decision = decide(
                mode=self.agent.permission_mode,
                rules=PermissionRule.objects.filter(project_id=self.agent.project_id),
                tool=name,
                tool_input=tool_input,
            )
            if decision.action == "allow":
                return Authorization(True, tool_input, {"action": "allow", "why": decision.why})
            if decision.action == "deny":
                return Authorization(
                    False,
                    tool_input,
                    {"action": "deny", "why": decision.why},
                    denial=f"Not allowed ({decision.why}). Do something else, or ask a person with SendMessage.",
                )
            self.fence()
            approval_request(agent_id=self.agent.pk, tool_use=tool_use, reason=decision.why)
            raise AwaitingApproval(
                f"Waiting for approval of {tool_activity(name, tool_input)} ({decision.why})."
            )
        if existing.status == ApprovalStatus.PENDING:
            raise AwaitingApproval(f"Waiting for approval of {tool_activity(name, tool_input)}.")
        who = str(existing.decided_by) if existing.decided_by_id else "a person"
        record = {"action": "allow" if existing.status == ApprovalStatus.APPROVED else "deny",
                  "why": f"{existing.status} by {who}", "approval": existing.pk}  # fmt: skip
        if existing.status == ApprovalStatus.APPROVED:
            final_input = existing.approved_input if existing.approved_input is not None else tool_input
            return Authorization(True, final_input, {**record, "edited": existing.approved_input is not None})
        return Authorization(False, tool_input, record, denial=f"Denied by {who}: {existing.decision_note}")

    def record_tool_call(self, tool_use: dict[str, Any], decision: dict[str, Any] | None = None) -> None:
        name, tool_input = tool_use["name"], tool_use.get("input")
        self.tool_names[tool_use["id"]] = name
        if isinstance(tool_input, dict) and isinstance(tool_input.get("file_path"), str):
            self.tool_paths[tool_use["id"]] = tool_input["file_path"]
        with transaction.atomic():
            self.fence()
            self._append(
                EntryKind.TOOL_CALL,
                {"id": tool_use["id"], "name": name, "input": tool_input, "decision": decision},
            )
            self._event(
                Kind.TOOL_STARTED,
                {"id": tool_use["id"], "name": name, "input": tool_input, "decision": decision},
                activity=tool_activity(name, tool_input),
            )

    def record_tool_result(self, tool_use_id: str, result: ToolResult) -> None:
        self._record_tool_result(tool_use_id, result)
        name = self.tool_names.get(tool_use_id, "")
        if name in WRITING_TOOLS and not result.is_error:
            self._note_written_file(tool_use_id)

    def _note_written_file(self, tool_use_id: str) -> None:
        """For the overlap warning: which files this agent wrote (in a transaction of its own)."""
        path = self.tool_paths.get(tool_use_id)
        if not path:
            return
        worktree = Path(self.agent.workspace.path)
        try:
            relative = (worktree / path).resolve().relative_to(worktree.resolve())
        except (ValueError, OSError):
            return
        file_touched(agent=self.agent, path=str(relative))

    def _record_tool_result(self, tool_use_id: str, result: ToolResult) -> None:
        with transaction.atomic():
            self.fence()
            self._append(
                EntryKind.TOOL_RESULT,
                {"tool_use_id": tool_use_id, "content": result.content, "is_error": result.is_error},
                duration_ms=result.duration_ms,
            )
            self._event(
                Kind.TOOL_FINISHED,
                {
                    "id": tool_use_id,
                    "name": self.tool_names.get(tool_use_id, ""),
                    "output": bounded(result.content, MAX_OUTPUT),
                    "truncated": len(result.content) > MAX_OUTPUT,
                    "is_error": result.is_error,
                    "duration_ms": result.duration_ms,
                },
                activity="thinking",
            )

    def record_user(self, content: list[dict[str, Any]]) -> None:
        with transaction.atomic():
            self.fence()
            self._append(EntryKind.USER, {"content": content})

    def take_inbox(self) -> list[dict[str, Any]]:
        if not Message.objects.filter(recipient=self.agent, delivered_at__isnull=True).exists():
            return []
        with transaction.atomic():
            self.fence()
            mail = list(
                Message.objects.select_for_update(of=("self",))
                .filter(recipient=self.agent, delivered_at__isnull=True)
                .select_related("sender__role", "sent_by_user")
            )
            if not mail:
                return []
            content = [{"type": "text", "text": _format_mail(message)} for message in mail]
            self._append(EntryKind.USER, {"content": content, "message_ids": [m.pk for m in mail]})
            Message.objects.filter(pk__in=[m.pk for m in mail]).update(delivered_at=timezone.now())
            return content


def _format_mail(message: Message) -> str:
    if message.kind == MessageKind.CHILD_RESULT:
        return message.body
    if message.sender_id:
        who = f"agent {message.sender_id} ({message.sender.role.name})"
    elif message.sent_by_user_id:
        who = f"{message.sent_by_user} (a person)"
    else:
        who = "the orchestrator"
    return f"Message from {who}:\n\n{message.body}"


class Heartbeat(threading.Thread):
    """Extends the lease while the agent runs, and notices a cancel or pause within a poll.

    When the agent is cancelled, paused or the lease is lost it asks the sink to stop, which
    closes a model stream in flight and makes a running Bash command kill its process group.
    """

    def __init__(self, sink: AgentSink) -> None:
        super().__init__(name=f"heartbeat-{sink.agent.pk}", daemon=True)
        self.sink = sink
        self.done = threading.Event()
        self.poll = settings.ORCHESTRATOR_CONTROL_POLL_SECONDS
        self.renew_every = max(self.poll, settings.ORCHESTRATOR_LEASE_SECONDS / 3)

    def run(self) -> None:
        next_renewal = time.monotonic() + self.renew_every
        try:
            while not self.done.wait(self.poll):
                try:
                    if time.monotonic() >= next_renewal:
                        self.sink.fence()
                        next_renewal = time.monotonic() + self.renew_every
                    elif not self.sink.holds_lease():
                        self.sink.request_stop()
                        return
                except AgentStop:
                    return
                except Exception:
                    log.exception("heartbeat of agent %s failed; trying again", self.sink.agent.pk)
        finally:
            connection.close()

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=5)


class AgentRun:
    def __init__(self, *, agent_id: int, token: uuid.UUID) -> None:
        self.agent = Agent.objects.select_related("role", "project", "workspace", "parent").get(pk=agent_id)
        self.token = token
        self.sink = AgentSink(agent=self.agent, token=token)

    def execute(self) -> None:
        heartbeat = Heartbeat(self.sink)
        heartbeat.start()
        started = time.monotonic()
        restore_sigterm = self._checkpoint_on_sigterm()
        try:
            if self.agent.attempts > settings.ORCHESTRATOR_MAX_ATTEMPTS:
                self._fail(
                    f"Gave up after {self.agent.attempts - 1} attempts: the worker running it stopped each time."
                )
                return
            if self.agent.attempts > 1:
                # The last run ended without a clean release: stop what it may have left running.
                kill_processes_in(Path(self.agent.workspace.path))
            budget_release_stale(agent=self.agent)
            restore_lost_worktree(self.agent)
            loop = self._build_loop()
            while True:
                final_text = loop.run()
                if not self._end_of_turn(final_text, loop):
                    break
        except Cancelled:
            log.info("agent %s: cancelled", self.agent.pk)
            self._commit_work(quietly=True)
        except Paused:
            log.info("agent %s: paused", self.agent.pk)
        except Shutdown:
            self._release_at_shutdown()
        except LeaseLost as exc:
            log.warning("agent %s: %s; stopping without further writes", self.agent.pk, exc)
        except ModelUnavailable as exc:
            self._park(str(exc))
        except OutOfBudget as exc:
            self._wait_for_budget(exc)
        except AwaitingApproval as exc:
            self._wait_for_approval(str(exc))
        except (AgentStop, OrchestratorError, workspaces.WorkspaceError) as exc:
            self._fail(str(exc))
        except Exception as exc:
            log.exception("agent %s: internal error", self.agent.pk)
            self._fail(f"Internal error: {type(exc).__name__}: {exc}")
        finally:
            heartbeat.finish()
            Agent.objects.filter(pk=self.agent.pk).update(
                run_seconds=F("run_seconds") + time.monotonic() - started
            )
            close_old_connections()
            restore_sigterm()

    def _checkpoint_on_sigterm(self) -> Callable[[], None]:
        """While this agent runs, SIGTERM stops it at once and releases it for another worker;
        afterwards the signal is delivered again to whatever handled it before (django-q2's
        workers: the default, so the process then exits as asked)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: self.sink.request_stop(shutdown=True))

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)
            if self.sink.shutting_down:
                os.kill(os.getpid(), signal.SIGTERM)

        return restore

    def _build_loop(self) -> AgentLoop:
        agent = self.agent
        if self.sink.next_seq == 0:
            self.sink.record_user([{"type": "text", "text": agent.task}])
        entries = agent.transcript.order_by("seq").values_list("kind", "payload")
        conversation = rebuild(entries)
        workspace = agent.workspace
        tools = toolbox_for(
            agent_id=agent.pk,
            parent_id=agent.parent_id,
            worktree=Path(workspace.path),
            tool_names=list(agent.role.tools),
            roles=list(Role.objects.order_by("name").values_list("name", flat=True)),
            should_stop=self.sink.should_stop,
            extra=[tool for provide in hooks.EXTRA_TOOLS for tool in provide(agent)],
            sandbox_network=agent.project.sandbox_network,
            sandbox_opt_out=agent.project.sandbox_opt_out,
        )
        model = AnthropicModel(
            client=anthropic_client(),
            model=agent.model,
            max_tokens=settings.ORCHESTRATOR_MAX_TOKENS,
            retry_seconds=settings.ORCHESTRATOR_API_RETRY_SECONDS,
            check_stop=self.sink.raise_if_stopped,
            wait=self.sink.stop.wait,
        )
        self.sink.on_stop.append(model.abort)
        return AgentLoop(
            model=model,
            tools=tools,
            sink=self.sink,
            system=system_prompt(agent, workspace, tool_names=list(tools.tools)),
            messages=conversation.messages,
            limits=Limits(
                max_turns=agent.role.max_turns,
                run_seconds_left=agent.role.max_run_seconds - agent.run_seconds,
            ),
            turns_taken=agent.turns,
            interrupted=conversation.interrupted,
        )

    def _end_of_turn(self, final_text: str, loop: AgentLoop) -> bool:
        """The model ended its turn. Returns True to go on (mail arrived meanwhile, or a hook
        asks for more, such as a workflow step that has not submitted its result)."""
        self.sink.check_control()  # a worker that lost the agent must not commit into its worktree
        for hook in hooks.END_OF_TURN:
            verdict = hook(self.agent)
            if verdict is not None and verdict.fail:
                raise OrchestratorError(verdict.fail)
            if verdict is not None and verdict.nudge:
                content = [{"type": "text", "text": verdict.nudge}]
                self.sink.record_user(content)
                loop.continue_with(content)
                return True
        self._commit_work()
        with transaction.atomic():
            # Children finishing lock this row too, so they see our decision or we see their mail.
            Agent.objects.select_for_update().filter(pk=self.agent.pk).first()
            self.sink.fence()
            if Message.objects.filter(recipient=self.agent, delivered_at__isnull=True).exists():
                return True
            unfinished = agents_unfinished_children(agent_id=self.agent.pk)
            if unfinished:
                waiting_for = ", ".join(f"#{pk}" for pk in unfinished)
                agent_transition(
                    agent_id=self.agent.pk,
                    to=S.WAITING,
                    reason=f"Waiting for agents {waiting_for} to finish.",
                    lease_token=self.token,
                    extra={"attempts": 0, "waiting_for": WaitingFor.CHILDREN},
                )
                return False
            agent_transition(
                agent_id=self.agent.pk, to=S.COMPLETED, lease_token=self.token, extra={"result": final_text}
            )
            report_to_parent(agent=self.agent, status=S.COMPLETED, text=final_text)
            merges_after_completion(agent_id=self.agent.pk)
        return False

    def _commit_work(self, *, quietly: bool = False) -> None:
        workspace = self.agent.workspace
        try:
            head = workspaces.commit_all(
                worktree=Path(workspace.path),
                git_dir=Path(workspace.git_dir),
                message=f"Agent {self.agent.pk} ({self.agent.role.name}): {_summary(self.agent.task)}",
            )
        except workspaces.WorkspaceError:
            if quietly:
                log.exception("agent %s: could not commit its work", self.agent.pk)
                return
            raise
        if head:
            Workspace.objects.filter(pk=workspace.pk).update(head_commit=head)

    def _release(self, reason: str) -> None:
        """Hand the agent back to the queue at once (clean: its attempt does not count)."""
        try:
            with transaction.atomic():
                agent_transition(
                    agent_id=self.agent.pk,
                    to=S.PENDING,
                    reason=reason,
                    lease_token=self.token,
                    extra={"attempts": 0},
                )
                transaction.on_commit(lambda: enqueue_agent_run(agent_id=self.agent.pk))
        except InvalidTransition:
            log.warning("agent %s: could not release it (%s); the reaper will", self.agent.pk, reason)

    def _wait_for_approval(self, reason: str) -> None:
        """Wait, holding no worker, until a person decides (they may have decided meanwhile)."""
        with transaction.atomic():
            Agent.objects.select_for_update().filter(pk=self.agent.pk).first()
            if not ApprovalRequest.objects.filter(agent=self.agent, status=ApprovalStatus.PENDING).exists():
                self._release("Approval decided while it was stopping; queued again.")
                return
            agent_transition(
                agent_id=self.agent.pk,
                to=S.WAITING,
                reason=reason,
                lease_token=self.token,
                extra={"waiting_for": WaitingFor.APPROVAL, "attempts": 0},
            )

    def _wait_for_budget(self, exc: OutOfBudget) -> None:
        """Wait, holding no worker, until a person or the parent raises the budget."""
        with transaction.atomic():
            if budget_has_room(agent=self.agent, usd=exc.usd, tokens=exc.tokens):
                self._release("Budget raised while it was stopping; queued again.")
                return
            agent_transition(
                agent_id=self.agent.pk,
                to=S.WAITING,
                reason=str(exc),
                lease_token=self.token,
                extra={"waiting_for": WaitingFor.BUDGET, "attempts": 0},
            )
            event_record(self.agent.pk, Kind.BUDGET_WAIT, {"reason": str(exc)})
            if self.agent.parent_id:
                Message.objects.create(
                    recipient_id=self.agent.parent_id,
                    sender=self.agent,
                    body=f"{exc} Give me more with GrantBudget (agent {self.agent.pk}) if the work is worth it.",
                )
                agent_wake_if_ready(agent_id=self.agent.parent_id)

    def _release_at_shutdown(self) -> None:
        """Hand the agent back without queueing it: the reaper of any cluster sends it within a
        tick (a worker of a stopping cluster must not queue: its own pusher would take it)."""
        try:
            agent_transition(
                agent_id=self.agent.pk,
                to=S.PENDING,
                reason="The worker running it shut down; queued again.",
                lease_token=self.token,
                extra={"attempts": 0, "wake_at": timezone.now()},
            )
        except InvalidTransition:
            log.warning("agent %s: could not release it at shutdown; the reaper will", self.agent.pk)

    def _park(self, reason: str) -> None:
        """The API is unavailable: wait without a worker and try again later, backing off."""
        failures = self.agent.api_failures + 1
        delay = min(PARK_MAX_SECONDS, settings.ORCHESTRATOR_PARK_SECONDS * 2 ** (failures - 1))
        wake_at = timezone.now() + timedelta(seconds=delay)
        try:
            agent_transition(
                agent_id=self.agent.pk,
                to=S.WAITING,
                reason=f"{reason}. Parked; trying again at {wake_at:%H:%M:%S} UTC.",
                lease_token=self.token,
                extra={
                    "wake_at": wake_at,
                    "api_failures": failures,
                    "attempts": 0,
                    "waiting_for": WaitingFor.API,
                },
            )
        except InvalidTransition:
            log.warning("agent %s: could not park it (%s)", self.agent.pk, reason)

    def _fail(self, reason: str) -> None:
        try:
            with transaction.atomic():
                agent_transition(agent_id=self.agent.pk, to=S.FAILED, reason=reason, lease_token=self.token)
                report_to_parent(agent=self.agent, status=S.FAILED, text=reason)
        except InvalidTransition:
            log.warning("agent %s: failed (%s) but no longer ours to mark", self.agent.pk, reason)


def _summary(task: str) -> str:
    first_line = task.strip().splitlines()[0] if task.strip() else "work"
    return first_line[:72]


def system_prompt(agent: Agent, workspace: Workspace, *, tool_names: list[str]) -> str:
    parts = [
        agent.role.system_prompt.strip(),
        "## Where you work\n"
        f"You are agent {agent.pk} ({agent.role.name}). You work in the git worktree at {workspace.path} "
        f"on branch {workspace.branch}. File paths are relative to that directory or absolute inside "
        "it; nothing outside it can be read or written. Everything you leave in the worktree is "
        "committed on your branch when you finish.",
    ]
    if agent.parent_id:
        parts.append(
            f"You were spawned by agent {agent.parent_id}; your final reply is sent to it as your result."
        )
    if "SpawnAgent" in tool_names:
        parts.append(
            "Children you spawn start from your files as they are at that moment. After spawning, end "
            "your turn: you wait without cost and are woken with every child's result once all have "
            "finished."
        )
    parts.append("When you are done, reply with a short summary of what you did: that reply is your result.")
    return "\n\n".join(parts)
