"""The workflow engine: start a workflow, advance it when an agent finishes, retry, cancel.

`workflow_advance` is the whole engine and is idempotent: under the workflow row's lock it syncs
each running step with its agent, applies loops, and starts every step (or fan-out item) whose
inputs are complete and newer than what its last run consumed. Nothing else starts steps, so a
duplicate trigger, a lost trigger (the reaper sweep re-sends it) or a worker dying anywhere
leaves the workflow correct: no step runs twice, none is forgotten.

A step re-runs when what it consumed changed: a reviewer's loop sends named items round again
(a new round of the first steps it names), and everything downstream of them follows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from agents.errors import OrchestratorError
from agents.events import event_record
from agents.models import FINISHED_STATUSES, Agent, AgentStatus, Role
from budgets.services import parse_usd
from workflows.models import StepRun, StepStatus, Workflow, WorkflowStatus, WorkflowTemplate
from workflows.spec import (
    Spec,
    Step,
    TemplateError,
    evaluate_condition,
    parse,
    render_prompt,
    resolve_reference,
)

log = logging.getLogger(__name__)
R = StepStatus
MAX_INVALID_SUBMISSIONS = 3
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


# --- templates ------------------------------------------------------------------------------


def template_validate(text: str) -> Spec:
    """Parse and check a template against the roles that exist; ValidationError says where."""
    try:
        return parse(text, roles=set(Role.objects.values_list("name", flat=True)))
    except TemplateError as exc:
        raise ValidationError(str(exc)) from None


def builtin_templates_sync() -> list[str]:
    """Create the built-in templates that are missing (an edited one is left as the admin made it)."""
    created = []
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        name = path.stem
        if not WorkflowTemplate.objects.filter(name=name).exists():
            text = path.read_text()
            spec = template_validate(text)
            WorkflowTemplate.objects.create(name=name, description=spec.description, yaml=text, builtin=True)
            created.append(name)
    return created


# --- starting -------------------------------------------------------------------------------


def workflow_start(
    *,
    template: str,
    input: str,
    repo_path: str,
    budget_usd: Any = None,
    by: AbstractBaseUser | None = None,
) -> Workflow:
    from agents.services import check_model_access, project_for_repo

    check_model_access()
    text = (input or "").strip()
    if not text:
        raise OrchestratorError("The workflow input is empty: say what it should build.")
    template_obj = WorkflowTemplate.objects.filter(name=template).first()
    if template_obj is None:
        known = ", ".join(WorkflowTemplate.objects.order_by("name").values_list("name", flat=True)) or "none"
        raise OrchestratorError(f"Unknown workflow template {template!r}. Templates: {known}.")
    try:
        spec = template_validate(template_obj.yaml)
    except ValidationError as exc:
        raise OrchestratorError(f"Template {template!r} is invalid: {exc.messages[0]}") from None
    usd = parse_usd(budget_usd)
    project = project_for_repo(repo_path=repo_path)
    with transaction.atomic():
        workflow = Workflow.objects.create(
            template=template_obj,
            spec=spec.to_dict(),
            project=project,
            input=text,
            budget_usd=usd,
            created_by=by,
        )
        workflow_advance(workflow_id=workflow.pk)
    return workflow


# --- the engine -----------------------------------------------------------------------------


@dataclass
class _State:
    workflow: Workflow
    spec: Spec
    runs: list[StepRun]

    def current(self, step: str, item: int) -> StepRun | None:
        candidates = [r for r in self.runs if r.step == step and r.item_index == item]
        return max(candidates, key=lambda r: r.round, default=None)

    def items_of(self, step: str) -> list[int]:
        return sorted({r.item_index for r in self.runs if r.step == step})


def workflow_advance(*, workflow_id: int) -> None:
    """Bring the workflow up to date with its agents and start what can start. Idempotent."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().filter(pk=workflow_id).first()
        if workflow is None or workflow.status != WorkflowStatus.RUNNING:
            return
        spec = Spec.from_dict(workflow.spec)
        state = _State(workflow, spec, list(workflow.step_runs.select_related("agent__workspace")))
        try:
            _sync_with_agents(state)
            _apply_loops(state)
            while _start_ready_steps(state):
                pass  # skipped steps may make later ones ready in the same pass
        except (TemplateError, OrchestratorError) as exc:
            _finish_workflow(workflow, WorkflowStatus.FAILED, f"The workflow can't go on: {exc}")
            return
        _update_workflow_status(state)


def _sync_with_agents(state: _State) -> None:
    for run in state.runs:
        if run.status != R.RUNNING or run.agent is None or run.agent.status not in FINISHED_STATUSES:
            continue
        step = state.spec.step(run.step)
        if run.agent.status == AgentStatus.COMPLETED:
            if step.output_schema is not None and run.output is None:
                run.status = R.FAILED
            else:
                run.status = R.COMPLETED
        else:
            run.status = R.FAILED if run.agent.status == AgentStatus.FAILED else R.CANCELLED
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "finished_at"])


def _apply_loops(state: _State) -> None:
    for run in list(state.runs):
        step = state.spec.step(run.step)
        if (
            step.loop is None
            or run.looped
            or run.status != R.COMPLETED
            or state.current(run.step, run.item_index) != run
        ):
            continue
        run.looped = True
        run.save(update_fields=["looped"])
        context = _context(
            state, step, run.item_index, run.round, item=run.item, extra_outputs={run.step: run}
        )
        if not evaluate_condition(step.loop.when, context):
            continue
        if run.round > step.loop.max_rounds:
            raise OrchestratorError(
                f"step {step.id} still asks for another round after {step.loop.max_rounds} extra round(s)"
            )
        chosen = None
        if step.loop.items:
            chosen = {}
            try:
                entries = resolve_reference(step.loop.items, context) or []
            except TemplateError:
                entries = []  # the reviewer named no items: all of them go round
            for entry in entries:
                index = entry if isinstance(entry, int) else (entry or {}).get("task")
                if isinstance(index, int):
                    chosen[index] = entry.get("feedback", "") if isinstance(entry, dict) else ""
        chosen = chosen or None  # "changes requested" naming no item: all of them go round
        feedback_all = (
            json.dumps(run.output, indent=2)
            if run.output is not None
            else (run.agent.result if run.agent else "")
        )
        # Only the first of the named steps go round again explicitly; the rest follow because
        # what they consumed is now stale.
        back = set(step.loop.back_to)
        for first in [s for s in step.loop.back_to if not (state.spec.ancestors(s) & back)]:
            target = state.spec.step(first)
            items = state.items_of(first) if target.for_each else [-1]
            for index in items:
                if chosen is not None and target.for_each and index not in chosen:
                    continue
                previous = state.current(first, index)
                feedback = (chosen or {}).get(index) or feedback_all
                _start(state, target, index, previous.item if previous else None,
                       round=(previous.round + 1) if previous else 1, feedback=str(feedback),
                       count=len(items))  # fmt: skip


def _start_ready_steps(state: _State) -> bool:
    started = False
    for step_id in state.spec.order():
        step = state.spec.step(step_id)
        if not _deps_settled(state, step):
            continue
        if step.for_each:
            if not _all_done(state, step.needs):
                continue  # the list to fan out over is not final yet
            context = _context(state, step, -1, 1)
            items = resolve_reference(step.for_each, context)
            if not isinstance(items, list):
                raise OrchestratorError(f"step {step.id}: for_each {step.for_each} is not a list")
            indexed = list(enumerate(items))
        else:
            indexed = [(-1, None)]
        for index, item in indexed:
            consumed = _consumed(state, step, index)
            if consumed is None:
                continue  # an input of this item is not complete
            current = state.current(step.id, index)
            if current is not None and (
                current.status in (R.RUNNING, R.FAILED, R.CANCELLED) or current.consumed == consumed
            ):
                continue
            round_ = current.round + 1 if current else 1
            feedback = current.feedback if current else ""
            _start(
                state,
                step,
                index,
                item,
                round=round_,
                feedback=feedback,
                consumed=consumed,
                count=len(indexed),
            )
            started = True
    return started


def _all_done(state: _State, step_ids: list[str]) -> bool:
    for step_id in step_ids:
        for index in state.items_of(step_id):
            run = state.current(step_id, index)
            if run is None or run.status not in (R.COMPLETED, R.SKIPPED):
                return False
    return True


def _deps_settled(state: _State, step: Step) -> bool:
    """Every step it needs has created all its runs (a fan-out's items are known)."""
    return all(state.items_of(dep) for dep in step.needs)


def _paired(state: _State, step: Step, dep: str) -> bool:
    """A fan-out step over the same list as its fan-out dependency takes that dependency item by item."""
    other = state.spec.step(dep)
    return bool(step.for_each and other.for_each and step.for_each == other.for_each)


def _relevant(state: _State, step: Step, index: int, dep: str) -> list[StepRun | None]:
    if _paired(state, step, dep):
        return [state.current(dep, index)]
    return [state.current(dep, i) for i in state.items_of(dep)]


def _consumed(state: _State, step: Step, index: int) -> list[int] | None:
    """The ids of the runs this item would start from, or None if one is not done."""
    ids = []
    for dep in step.needs:
        for run in _relevant(state, step, index, dep):
            if run is None or run.status not in (R.COMPLETED, R.SKIPPED):
                return None
            ids.append(run.pk)
    return sorted(ids)


def _start(
    state: _State,
    step: Step,
    index: int,
    item: Any,
    *,
    round: int,
    feedback: str = "",
    consumed: list[int] | None = None,
    count: int = 1,
) -> StepRun:
    """Create the run (and its agent), or record it skipped if its condition is false or an input
    was skipped."""
    from agents.services import agent_spawn

    workflow = state.workflow
    if consumed is None:
        consumed = _consumed(state, step, index) or []
    run = StepRun(
        workflow=workflow,
        step=step.id,
        item_index=index,
        item=item,
        round=round,
        feedback=feedback,
        consumed=consumed,
    )
    inputs = [r for r in state.runs if r.pk in consumed]
    context = _context(state, step, index, round, item=item, feedback=feedback)
    if any(r.status == R.SKIPPED for r in inputs) or (
        step.condition and not evaluate_condition(step.condition, context)
    ):
        run.status, run.finished_at = R.SKIPPED, timezone.now()
        run.save()
        state.runs.append(run)
        return run
    share = step.budget_share / max(1, count)
    budget = (workflow.budget_usd * share).quantize(Decimal("0.000001")) if workflow.budget_usd else None
    agent = agent_spawn(
        role=step.role,
        task=_task_text(workflow, step, render_prompt(step.prompt, context), index, round),
        repo_path=workflow.project.repo_path,
        budget_usd=budget,
        spawned_by=workflow.created_by,
        start_point=_start_point(state, step, index),
    )
    run.agent = agent
    run.save()
    state.runs.append(run)
    event_record(
        agent.pk, "workflow_step", {"workflow": workflow.pk, "step": step.id, "item": index, "round": round}
    )
    return run


def _start_point(state: _State, step: Step, index: int) -> str | None:
    previous = state.current(step.id, index)
    if previous is not None and previous.agent is not None:
        return previous.agent.workspace.branch  # another round carries on from the last one's work
    if not step.branch_from:
        return None
    runs = _relevant(state, step, index, step.branch_from) if step.branch_from in step.needs else []
    if not runs:
        source = state.spec.step(step.branch_from)
        runs = [state.current(step.branch_from, index if (step.for_each and source.for_each) else -1)]
    run = runs[0] if len(runs) == 1 else None
    if run is None or run.agent is None:
        return None
    return run.agent.workspace.branch


def _task_text(workflow: Workflow, step: Step, prompt: str, index: int, round: int) -> str:
    where = (
        f"step {step.id}"
        + (f", item {index + 1}" if index >= 0 else "")
        + (f", round {round}" if round > 1 else "")
    )
    parts = [prompt.strip(), "", f"(Workflow #{workflow.pk} {workflow.template.name}, {where}.)"]
    if step.output_schema is not None:
        parts.append(
            "When you are done, call SubmitResult with your result; it must match its schema. Then end your turn."
        )
    return "\n".join(parts)


def _context(
    state: _State,
    step: Step,
    index: int,
    round: int,
    *,
    item: Any = None,
    feedback: str = "",
    extra_outputs: dict[str, StepRun] | None = None,
) -> dict[str, Any]:
    """What prompts, conditions and references see: the input, and each earlier step's results."""
    steps: dict[str, Any] = {}
    for other_id in state.spec.ancestors(step.id) | set(extra_outputs or {}):
        other = state.spec.step(other_id)
        if extra_outputs and other_id in extra_outputs:
            runs = [extra_outputs[other_id]]
        elif other.for_each and not (_paired(state, step, other_id) and index >= 0):
            runs = [state.current(other_id, i) for i in state.items_of(other_id)]
            steps[other_id] = {
                "outputs": [r.output if r else None for r in runs],
                "results": [r.agent.result if r and r.agent else "" for r in runs],
                "branches": [r.agent.workspace.branch if r and r.agent else "" for r in runs],
                "items": [r.item if r else None for r in runs],
            }
            continue
        else:
            runs = [state.current(other_id, index if other.for_each else -1)]
        run = runs[0]
        steps[other_id] = {
            "output": run.output if run else None,
            "result": run.agent.result if run and run.agent else "",
            "branch": run.agent.workspace.branch if run and run.agent else "",
            "item": run.item if run else None,
        }
    return {
        "input": state.workflow.input,
        "workflow": {"id": state.workflow.pk, "name": state.spec.name},
        "steps": steps,
        "item": item,
        "item_index": index,
        "round": round,
        "feedback": feedback,
    }


def _update_workflow_status(state: _State) -> None:
    workflow = state.workflow
    latest = [state.current(s, i) for s in state.spec.order() for i in (state.items_of(s) or [])]
    if any(r is not None and r.status == R.RUNNING for r in latest):
        return
    failed = [r for r in latest if r is not None and r.status in (R.FAILED, R.CANCELLED)]
    if failed:
        names = ", ".join(f"{r.step}" + (f"[{r.item_index}]" if r.item_index >= 0 else "") for r in failed)
        _finish_workflow(
            workflow, WorkflowStatus.FAILED, f"Step {names} failed; retry it to go on.", final=False
        )
        return
    if all(state.items_of(s) for s in state.spec.order()):
        _finish_workflow(workflow, WorkflowStatus.COMPLETED, "All steps done.")


def _finish_workflow(workflow: Workflow, status: str, reason: str, *, final: bool = True) -> None:
    workflow.status, workflow.status_reason = status, reason
    workflow.finished_at = timezone.now() if final else None
    workflow.save(update_fields=["status", "status_reason", "finished_at", "updated_at"])


# --- people's controls ----------------------------------------------------------------------


def workflow_step_retry(*, run: StepRun, by: AbstractBaseUser | None = None) -> StepRun:
    """Retry a failed step: its agent resumes from its transcript; finished steps stay finished."""
    from agents.services import agent_retry

    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=run.workflow_id)
        run.refresh_from_db()
        if run.status not in (R.FAILED, R.CANCELLED):
            raise OrchestratorError(
                f"Step {run.step} is {run.status}; only a failed or cancelled step is retried."
            )
        if workflow.status == WorkflowStatus.CANCELLED:
            raise OrchestratorError(f"Workflow {workflow.pk} was cancelled.")
        agent = run.agent
        if agent.status == AgentStatus.COMPLETED:  # completed without a result: ask again
            raise OrchestratorError(
                f"Agent {agent.pk} completed without submitting a result; start a new workflow."
            )
        agent_retry(agent=agent, by=by)
        StepRun.objects.filter(pk=run.pk).update(status=R.RUNNING, finished_at=None, invalid_submissions=0)
        workflow.status, workflow.status_reason, workflow.finished_at = WorkflowStatus.RUNNING, "", None
        workflow.save(update_fields=["status", "status_reason", "finished_at", "updated_at"])
    run.refresh_from_db()
    return run


def workflow_cancel(*, workflow: Workflow, by: AbstractBaseUser | None = None) -> list[int]:
    """Cancel the workflow and every agent it still has working. Returns the agents cancelled."""
    from agents.services import agent_cancel

    cancelled: list[int] = []
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if workflow.status in (WorkflowStatus.COMPLETED, WorkflowStatus.CANCELLED):
            raise OrchestratorError(f"Workflow {workflow.pk} is {workflow.status}.")
        for run in workflow.step_runs.select_related("agent").filter(status=R.RUNNING):
            if run.agent and run.agent.status not in FINISHED_STATUSES:
                cancelled += agent_cancel(
                    agent=run.agent, subtree=True, reason="Its workflow was cancelled.", by=by
                )
            StepRun.objects.filter(pk=run.pk).update(status=R.CANCELLED, finished_at=timezone.now())
        _finish_workflow(workflow, WorkflowStatus.CANCELLED, f"Cancelled by {by or 'a command'}.")
    return cancelled


def workflow_cost(*, workflow: Workflow) -> Decimal:
    total = Agent.objects.filter(step_run__workflow=workflow).aggregate(total=Sum("cost_usd"))["total"]
    return Decimal(total or 0)


# --- what step agents see -------------------------------------------------------------------


def step_output_submit(*, agent_id: int, output: Any) -> str:
    """The SubmitResult tool: validate against the step's schema and store. Raises OrchestratorError
    with what is wrong (the model sees it and corrects), at most MAX_INVALID_SUBMISSIONS times."""
    import jsonschema

    run = StepRun.objects.select_related("workflow").filter(agent_id=agent_id).first()
    if run is None:
        raise OrchestratorError("You are not a workflow step; there is nothing to submit.")
    schema = Spec.from_dict(run.workflow.spec).step(run.step).output_schema or {"type": "object"}
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(output), key=lambda e: list(e.path))
    if errors:
        StepRun.objects.filter(pk=run.pk).update(invalid_submissions=run.invalid_submissions + 1)
        left = MAX_INVALID_SUBMISSIONS - run.invalid_submissions - 1
        problems = "; ".join(f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors[:5])
        if left <= 0:
            raise OrchestratorError(
                f"The result does not match the schema ({problems}). No attempts left: the step fails."
            )
        raise OrchestratorError(
            f"The result does not match the schema: {problems}. Fix it and call SubmitResult again ({left} attempt(s) left)."
        )
    StepRun.objects.filter(pk=run.pk).update(output=output)
    return "Result recorded. End your turn now."


def step_end_of_turn(agent: Agent):
    """A step that owes a structured result may not end without it (bounded nudges)."""
    from agents.hooks import EndOfTurn

    run = StepRun.objects.select_related("workflow").filter(agent_id=agent.pk).first()
    if run is None:
        return None
    step = Spec.from_dict(run.workflow.spec).step(run.step)
    if step.output_schema is None or run.output is not None:
        return None
    if run.invalid_submissions >= MAX_INVALID_SUBMISSIONS:
        return EndOfTurn(
            fail=f"Step {step.id} gave no valid result after {run.invalid_submissions} attempts."
        )
    StepRun.objects.filter(pk=run.pk).update(invalid_submissions=run.invalid_submissions + 1)
    return EndOfTurn(
        nudge="You ended your turn without calling SubmitResult. Call it now with your result "
        f"(schema: {json.dumps(step.output_schema)})."
    )


def step_merge_branches(*, agent_id: int, step_id: str) -> list[str]:
    """The MergeBranches tool: merge the latest branches of an earlier step into the caller's."""
    from agents.merges import merge_now, merge_request
    from agents.models import MergeStatus

    run = StepRun.objects.select_related("workflow", "agent__workspace").filter(agent_id=agent_id).first()
    if run is None:
        raise OrchestratorError("You are not a workflow step.")
    state = _State(
        run.workflow, Spec.from_dict(run.workflow.spec), list(run.workflow.step_runs.select_related("agent"))
    )
    if step_id not in state.spec.ancestors(run.step):
        raise OrchestratorError(f"Step {step_id!r} is not an earlier step of yours.")
    lines = []
    for index in state.items_of(step_id):
        source = state.current(step_id, index)
        if source is None or source.status != R.COMPLETED or source.agent is None:
            continue
        merge = merge_now(merge=merge_request(agent=source.agent, target_branch=run.agent.workspace.branch))
        if merge.status != MergeStatus.MERGED:
            raise OrchestratorError(
                f"Merging {merge.source_branch}: {merge.status}. {merge.reason} "
                + (f"Conflicting files: {', '.join(merge.conflicts)}." if merge.conflicts else "")
            )
        lines.append(f"{merge.source_branch}: {merge.reason}")
    return lines


def workflows_reap() -> None:
    """The reaper's sweep: a workflow whose agents finished but that did not advance (its trigger
    was lost with a worker) is advanced now."""
    stale = Workflow.objects.filter(
        status=WorkflowStatus.RUNNING,
        step_runs__status=R.RUNNING,
        step_runs__agent__status__in=FINISHED_STATUSES,
        updated_at__lt=timezone.now() - timedelta(seconds=5),
    ).distinct()
    for workflow_id in stale.values_list("pk", flat=True):
        enqueue_advance(workflow_id=workflow_id)


def enqueue_advance(*, workflow_id: int) -> None:
    from django_q.tasks import async_task

    Workflow.objects.filter(pk=workflow_id).update(updated_at=timezone.now())
    async_task("workflows.tasks.advance_workflow", workflow_id, task_name=f"workflow-{workflow_id}")


def on_agent_finished(sender: Any, agent_id: int, status: str, **kwargs: Any) -> None:
    """The event that moves workflows: an agent of a step finished."""
    workflow_id = StepRun.objects.filter(agent_id=agent_id).values_list("workflow_id", flat=True).first()
    if workflow_id is not None:
        enqueue_advance(workflow_id=workflow_id)
