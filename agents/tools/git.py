"""The git-agent's tools: commit, merge a child, push, open a pull request, settle a conflict.

They run in the calling agent's worker, which is the only writer of its worktree, and go through
the same services as the dashboard (agents.merges, agents.forges). Git commands never run with
the agent's hooks or config (agents.workspaces).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.errors import OrchestratorError
from agents.tools.base import Tool, ToolContext, ToolError


def git_tools(*, agent_id: int) -> list[Tool]:
    def me():
        from agents.models import Agent

        return Agent.objects.select_related("project", "workspace", "role").get(pk=agent_id)

    def commit(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents import workspaces
        from agents.models import Workspace

        agent = me()
        message = tool_input["message"].strip()
        if not message:
            raise ToolError("The commit message is empty.")
        try:
            head = workspaces.commit_all(
                worktree=Path(agent.workspace.path), git_dir=Path(agent.workspace.git_dir), message=message
            )
        except workspaces.WorkspaceError as exc:
            raise ToolError(str(exc)) from None
        if head is None:
            return "Nothing to commit: the worktree is clean."
        Workspace.objects.filter(agent_id=agent_id).update(head_commit=head)
        return f"Committed {head[:10]} on {agent.workspace.branch}."

    def merge_child(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents import workspaces
        from agents.merges import merge_now, merge_request
        from agents.models import Agent, MergeStatus

        agent = me()
        child = Agent.objects.filter(pk=tool_input["agent"], parent_id=agent_id).first()
        if child is None:
            raise ToolError(f"Agent {tool_input['agent']} is not one of your children.")
        if child.status != "completed":
            raise ToolError(f"Agent {child.pk} is {child.status}; only a completed child's branch is merged.")
        # Our own uncommitted work first, so the merge starts from a clean worktree.
        workspaces.commit_all(
            worktree=Path(agent.workspace.path),
            git_dir=Path(agent.workspace.git_dir),
            message=f"Agent {agent_id}: work in progress before merging agent {child.pk}",
        )
        try:
            merge = merge_now(merge=merge_request(agent=child, target_branch=agent.workspace.branch))
        except OrchestratorError as exc:
            raise ToolError(str(exc)) from None
        if merge.status == MergeStatus.MERGED:
            return f"Merged agent {child.pk}'s branch into yours ({merge.result_commit[:10]}). {merge.reason}"
        if merge.status == MergeStatus.CONFLICT:
            files = ", ".join(merge.conflicts)
            raise ToolError(
                f"Merge {merge.pk} has conflicts in: {files}. Nothing was changed. Call ResolveConflict "
                f"(merge {merge.pk}) to have an agent resolve them, or AbandonMerge to give up this merge."
            )
        raise ToolError(f"Merge {merge.pk} {merge.status}: {merge.reason}\n{merge.test_output[-3000:]}")

    def push(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents import workspaces

        agent = me()
        if not agent.project.remote:
            raise ToolError("The project has no remote configured; a person sets one in the admin.")
        try:
            workspaces.push(
                repo=Path(agent.project.repo_path), remote=agent.project.remote, branch=agent.workspace.branch
            )
        except workspaces.WorkspaceError as exc:
            raise ToolError(str(exc)) from None
        return f"Pushed {agent.workspace.branch} to {agent.project.remote}."

    def open_pull_request(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents.forges import pull_request_open

        try:
            pr = pull_request_open(agent=me(), title=tool_input["title"], body=tool_input.get("body", ""))
        except OrchestratorError as exc:
            raise ToolError(str(exc)) from None
        return f"Opened pull request {pr.number or ''} ({pr.url}): {pr.head_branch} → {pr.base_branch}."

    def _merge_of_mine(merge_id: int):
        from agents.models import Merge

        merge = Merge.objects.select_related("project").filter(pk=merge_id).first()
        agent = me()
        if (
            merge is None
            or merge.project_id != agent.project_id
            or merge.target_branch != agent.workspace.branch
        ):
            raise ToolError(f"Merge {merge_id} is not a merge into your branch.")
        return merge

    def resolve_conflict(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents.merges import merge_resolve

        try:
            resolver = merge_resolve(merge=_merge_of_mine(tool_input["merge"]))
        except OrchestratorError as exc:
            raise ToolError(str(exc)) from None
        return (
            f"Agent {resolver.pk} is resolving the conflicts on {resolver.workspace.branch}; when it completes, "
            "its branch is merged into yours through the merge queue."
        )

    def abandon_merge(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents.merges import merge_abandon

        try:
            merge_abandon(merge=_merge_of_mine(tool_input["merge"]))
        except OrchestratorError as exc:
            raise ToolError(str(exc)) from None
        return f"Merge {tool_input['merge']} abandoned; nothing was changed."

    def schema(properties: dict, required: list[str]) -> dict:
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }

    merge_id = {"merge": {"type": "integer", "description": "The merge's id (from MergeChild's answer)."}}
    return [
        Tool(
            "Commit",
            "Commit everything in your worktree on your branch with this message.",
            schema({"message": {"type": "string", "minLength": 1}}, ["message"]),
            commit,
        ),
        Tool(
            "MergeChild",
            "Merge a completed child agent's branch into your branch (tested with the project's test "
            "command first, if it has one). A conflict changes nothing and lists the files.",
            schema({"agent": {"type": "integer", "description": "The child's id."}}, ["agent"]),
            merge_child,
        ),
        Tool("Push", "Push your branch to the project's remote.", schema({}, []), push),
        Tool(
            "OpenPullRequest",
            "Open a pull request of your branch into the project's base branch, through the project's forge.",
            schema(
                {"title": {"type": "string", "minLength": 1}, "body": {"type": "string"}},
                ["title"],
            ),
            open_pull_request,
        ),
        Tool(
            "ResolveConflict",
            "Spawn an agent to resolve a merge into your branch that conflicted.",
            schema(merge_id, ["merge"]),
            resolve_conflict,
        ),
        Tool(
            "AbandonMerge",
            "Give up a conflicted merge into your branch.",
            schema(merge_id, ["merge"]),
            abandon_merge,
        ),
    ]
