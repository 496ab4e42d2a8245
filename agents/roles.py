"""The built-in roles, as seeded by migration 0002. After that they are data: edit them in the admin."""

from typing import Any

READ_TOOLS = ["Read", "Glob", "Grep"]
EDIT_TOOLS = ["Read", "Write", "Edit", "Glob", "Grep"]

BUILT_IN_ROLES = [
    {
        "name": "spec-writer",
        "description": "Turns a request into a precise, testable specification.",
        "tools": [*EDIT_TOOLS, "SpawnAgent", "SendMessage", "GrantBudget", "RequestBudget"],
        "system_prompt": (
            "You are a spec-writer on a software team. Turn the request you are given into a short, "
            "precise specification: the behaviour wanted, the interfaces, the edge cases and how to "
            "tell it is done. Read the code that exists first. Write the specification to a file in "
            "the repository (SPEC.md unless told otherwise). If the task asks you to have it built, "
            "spawn an implementer with a task that points at your specification."
        ),
    },
    {
        "name": "planner",
        "description": "Breaks a specification into independent tasks and delegates them.",
        "tools": [*EDIT_TOOLS, "SpawnAgent", "SendMessage", "GrantBudget", "RequestBudget"],
        "system_prompt": (
            "You are a planner on a software team. Read the specification and the code, then break the "
            "work into small tasks that can be done independently and in parallel, each with a clear "
            "definition of done. Write the plan to PLAN.md. Spawn one agent per task when asked to "
            "carry the plan out."
        ),
    },
    {
        "name": "implementer",
        "description": "Writes the code for one task, with tests.",
        "tools": [*EDIT_TOOLS, "Bash", "SendMessage", "RequestBudget"],
        "system_prompt": (
            "You are an implementer on a software team. Do the one task you are given: read the "
            "relevant code and any specification first, make the smallest change that does the job "
            "well, follow the project's style, and add or update tests. Run the tests with Bash before "
            "you finish. If something blocks you, say so in your result instead of guessing."
        ),
    },
    {
        "name": "tester",
        "description": "Tests a change and reports what fails.",
        "tools": [*EDIT_TOOLS, "Bash", "SendMessage", "RequestBudget"],
        "system_prompt": (
            "You are a tester on a software team. Exercise the change you are given: run the existing "
            "tests, add tests for the behaviour that is not covered, and try the edge cases. Report "
            "exactly what passes and what fails, with the commands to reproduce each failure."
        ),
    },
    {
        "name": "reviewer",
        "description": "Reviews a change and gives a verdict.",
        "tools": [*READ_TOOLS, "Bash", "SendMessage", "RequestBudget"],
        "system_prompt": (
            "You are a code reviewer on a software team. Read the change and the code around it. Look "
            "for bugs, missing tests, unclear names and needless complexity. End with a verdict: "
            "'approved', or 'changes requested' followed by a numbered list of the changes."
        ),
    },
    {
        "name": "git-agent",
        "description": "Commits, merges and prepares branches for review.",
        "tools": [
            *READ_TOOLS,
            "Bash",
            "SendMessage",
            "RequestBudget",
            "Commit",
            "MergeChild",
            "Push",
            "OpenPullRequest",
            "ResolveConflict",
            "AbandonMerge",
        ],
        "system_prompt": (
            "You are the git agent of a software team. You commit finished work with clear messages "
            "(Commit), merge your children's branches into yours (MergeChild; on a conflict, "
            "ResolveConflict or AbandonMerge), push (Push) and open pull requests (OpenPullRequest). "
            "Never rewrite history that others may have and never force-push."
        ),
    },
]


def seed_roles(role_model: Any) -> None:
    """Create the built-in roles that are missing (takes the model: migrations pass a historical one)."""
    for role in BUILT_IN_ROLES:
        role_model.objects.get_or_create(
            name=role["name"], defaults={k: v for k, v in role.items() if k != "name"}
        )


def add_budget_tools(role_model: Any) -> None:
    """Roles seeded before budgets existed get the budget tools (migration 0006)."""
    for role in role_model.objects.all():
        tools = list(role.tools)
        if "SpawnAgent" in tools and "GrantBudget" not in tools:
            tools.append("GrantBudget")
        if "RequestBudget" not in tools:
            tools.append("RequestBudget")
        if tools != role.tools:
            role.tools = tools
            role.save(update_fields=["tools"])


GIT_AGENT_TOOLS = ["Commit", "MergeChild", "Push", "OpenPullRequest", "ResolveConflict", "AbandonMerge"]


def add_git_tools(role_model: Any) -> None:
    """The git-agent seeded before the git tools existed gets them, and its new prompt (migration 0010)."""
    built_in = next(r for r in BUILT_IN_ROLES if r["name"] == "git-agent")
    role = role_model.objects.filter(name="git-agent").first()
    if role is None:
        return
    role.tools = list(role.tools) + [t for t in GIT_AGENT_TOOLS if t not in role.tools]
    role.system_prompt = built_in["system_prompt"]
    role.save(update_fields=["tools", "system_prompt"])
