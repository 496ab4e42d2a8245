"""Tools a workflow gives its step agents: SubmitResult (structured output) and MergeBranches."""

from __future__ import annotations

import json
from typing import Any

from agents.errors import OrchestratorError
from agents.models import Agent
from agents.tools.base import Tool, ToolContext, ToolError


def workflow_tools(agent: Agent) -> list[Tool]:
    from workflows.models import StepRun
    from workflows.spec import Spec

    run = StepRun.objects.select_related("workflow").filter(agent_id=agent.pk).first()
    if run is None:
        return []
    spec = Spec.from_dict(run.workflow.spec)
    step = spec.step(run.step)
    tools = []
    if step.output_schema is not None:

        def submit(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
            from workflows.services import step_output_submit

            try:
                return step_output_submit(agent_id=agent.pk, output=tool_input)
            except OrchestratorError as exc:
                raise ToolError(str(exc)) from None

        # The schema is in the description and checked by the handler, not by the toolbox, so
        # every invalid attempt reaches the handler and is counted (a bounded number are allowed).
        schema = {"type": "object", "additionalProperties": True}
        tools.append(
            Tool(
                "SubmitResult",
                "Submit this step's result, which later steps of the workflow use. Its input must match this "
                "JSON schema: " + json.dumps(step.output_schema),
                schema,
                submit,
            )
        )
    earlier = sorted(spec.ancestors(step.id))
    if agent.role.name == "git-agent" and earlier:

        def merge_branches(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
            from workflows.services import step_merge_branches

            try:
                merged = step_merge_branches(agent_id=agent.pk, step_id=tool_input["step"])
            except OrchestratorError as exc:
                raise ToolError(str(exc)) from None
            return "Merged into your branch:\n" + ("\n".join(merged) or "(nothing to merge)")

        tools.append(
            Tool(
                "MergeBranches",
                "Merge the branches of an earlier step of your workflow (every item, latest round) into your "
                "branch, each tested first if the project has a test command. A conflict changes nothing.",
                {
                    "type": "object",
                    "properties": {"step": {"type": "string", "enum": earlier}},
                    "required": ["step"],
                    "additionalProperties": False,
                },
                merge_branches,
            )
        )
    return tools
