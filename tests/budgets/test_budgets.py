"""Budgets hold under fan-out, pause instead of killing, and every cent is on the ledger."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from agents.models import Agent, AgentStatus, Project, WaitingFor
from agents.services import agent_cancel, agent_spawn
from budgets.models import Budget, LedgerEntry, LedgerKind, ModelPrice, UsageRecord
from budgets.pricing import price_cache_clear
from budgets.services import budget_return_leftover
from tests.conftest import run_here, wait_for
from tests.fakes.anthropic_server import Turn, text, tool_use

S = AgentStatus
BIG = {"input_tokens": 20_000, "output_tokens": 2_000}  # $0.06 a reply on claude-sonnet-5-5


def assert_ledger_matches(budget: Budget) -> None:
    """The balances are exactly the sums of the ledger; nothing moved off the books."""
    sums = LedgerEntry.objects.filter(budget=budget).aggregate(
        limit=Sum("limit_usd"), spent=Sum("spent_usd"), reserved=Sum("reserved_usd")
    )
    budget.refresh_from_db()
    assert (sums["spent"] or 0) == budget.spent_usd
    assert (sums["reserved"] or 0) == budget.reserved_usd
    assert (sums["limit"] or 0) == (budget.limit_usd or 0)


@pytest.mark.e2e
def test_eight_children_sharing_a_parent_never_overspend_it_or_the_project(workers, fake_anthropic, repo):
    project_cap = Decimal("0.60")
    parent_limit = Decimal("1.00")
    spawns = [
        tool_use("SpawnAgent", {"role": "implementer", "task": f"Child task {n}: build part {n}"})
        for n in range(8)
    ]
    fake_anthropic.script("Fan out the work", [Turn(spawns), *[Turn([text("Noted.")]) for _ in range(40)]])
    for n in range(8):
        fake_anthropic.script(
            f"Child task {n}",
            [
                Turn([tool_use("Glob", {"pattern": "*"})], usage=BIG),
                Turn([tool_use("Glob", {"pattern": "*"})], usage=BIG),
                Turn([text(f"Part {n} done.")], usage=BIG),
            ],
        )
    parent = agent_spawn(
        role="planner", task="Fan out the work", repo_path=str(repo), budget_usd=parent_limit
    )
    Project.objects.filter(pk=parent.project_id).update(monthly_budget_usd=project_cap)
    workers.start(count=2, workers_per_cluster=5)

    def settled() -> bool:
        children = list(Agent.objects.filter(parent=parent))
        return (
            len(children) == 8
            and all(
                c.status == S.COMPLETED or (c.status == S.WAITING and c.waiting_for == WaitingFor.BUDGET)
                for c in children
            )
            and not Budget.objects.filter(reserved_usd__gt=0).exists()
        )

    wait_for(
        settled,
        timeout=120,
        interval=0.5,
        message=lambda: (
            f"children to settle: {list(Agent.objects.values_list('pk', 'status', 'status_reason'))}"
        ),
    )

    children = list(Agent.objects.filter(parent=parent))
    waiting = [c for c in children if c.status == S.WAITING]
    assert waiting and all("Out of budget" in c.status_reason for c in waiting)
    assert not Agent.objects.filter(status=S.FAILED).exists()
    spent = UsageRecord.objects.aggregate(total=Sum("cost_usd"))["total"]
    assert spent <= project_cap and spent <= parent_limit
    project_budget = Budget.objects.get(project=parent.project)
    assert project_budget.spent_usd == spent <= project_budget.limit_usd
    for budget in Budget.objects.all():
        assert_ledger_matches(budget)
        assert budget.limit_usd is None or budget.spent_usd <= budget.limit_usd
    # every child's limit was carved out of the parent's: together never more than it had
    carved = -LedgerEntry.objects.filter(budget__agent=parent, kind=LedgerKind.ALLOCATE).aggregate(
        s=Sum("limit_usd")
    )["s"]
    assert carved <= parent_limit


def test_raising_the_budget_of_a_waiting_agent_resumes_it(agents_env, repo):
    agents_env.script("Tight budget", [Turn([text("Done within the new budget.")])])
    agent = run_here(
        agent_spawn(role="implementer", task="Tight budget", repo_path=str(repo), budget_usd="0.01")
    )
    assert agent.status == S.WAITING and agent.waiting_for == WaitingFor.BUDGET
    assert agent.status_reason.startswith("Out of budget: the next call may cost up to $")
    assert agents_env.requests_for("Tight budget") == []  # nothing was spent

    out = StringIO()
    call_command("set_budget", str(agent.pk), "--usd", "5", stdout=out)
    agent.refresh_from_db()
    assert agent.status == S.PENDING and "limit $5.000000" in out.getvalue()
    agent = run_here(agent)
    assert agent.status == S.COMPLETED
    assert_ledger_matches(agent.budget)


def test_a_child_out_of_budget_asks_its_parent_who_grants_more(agents_env, repo):
    agents_env.script(
        "Lead the team",
        [
            Turn(
                [
                    tool_use(
                        "SpawnAgent", {"role": "implementer", "task": "Expensive subtask", "budget_usd": 0.01}
                    )
                ]
            ),
            Turn([text("Waiting for my child.")]),
            lambda body: Turn(
                [
                    tool_use(
                        "GrantBudget",
                        {
                            "agent": int(
                                body["messages"][-1]["content"][0]["text"]
                                .split("agent ")[1]
                                .split(" ")[0]
                                .strip("()")
                            ),
                            "amount_usd": 1,
                        },
                    )
                ]
            ),
            Turn([text("Granted.")]),
            Turn([text("All done.")]),
        ],
    )
    agents_env.script("Expensive subtask", [Turn([text("Subtask done.")])])
    parent = run_here(agent_spawn(role="planner", task="Lead the team", repo_path=str(repo), budget_usd=5))
    child = Agent.objects.get(parent=parent)
    child = run_here(child)
    assert child.waiting_for == WaitingFor.BUDGET
    parent.refresh_from_db()
    assert parent.status == S.PENDING  # the child's message woke it

    parent = run_here(parent)
    child.refresh_from_db()
    assert child.status == S.PENDING and child.budget.limit_usd == Decimal("1.01")
    run_here(child)
    parent = run_here(parent)
    assert parent.status == S.COMPLETED
    for budget in Budget.objects.all():
        assert_ledger_matches(budget)


@pytest.mark.parametrize("ending", ["completed", "failed", "cancelled"])
def test_a_finished_childs_leftover_returns_to_the_parent_exactly_once(agents_env, repo, ending):
    parent = agent_spawn(role="planner", task="Parent", repo_path=str(repo), budget_usd="1.00")
    child = agent_spawn(role="implementer", task="Child", parent=parent, budget_usd="0.30")
    assert Budget.objects.get(agent=parent).limit_usd == Decimal("0.700000")
    assert Budget.objects.get(agent=child).limit_usd == Decimal("0.300000")
    if ending == "completed":
        agents_env.script("Child", [Turn([text("done")], usage={"input_tokens": 1000, "output_tokens": 100})])
        child = run_here(child)
    elif ending == "failed":
        agents_env.script("Child", [Turn([text("x")], stop_reason="refusal")])
        child = run_here(child)
    else:
        agent_cancel(agent=child)
    child.refresh_from_db()
    assert child.status == ending

    spent = Budget.objects.get(agent=child).spent_usd
    parent_budget = Budget.objects.get(agent=parent)
    assert parent_budget.limit_usd == Decimal("1.00") - spent
    assert budget_return_leftover(agent=child) == 0  # a second time moves nothing
    assert LedgerEntry.objects.filter(kind=LedgerKind.RETURN, budget=parent_budget).count() == 1
    for budget in Budget.objects.all():
        assert_ledger_matches(budget)


def test_a_price_change_does_not_change_the_cost_of_earlier_calls(agents_env, repo):
    agents_env.script("Priced", [Turn([text("ok")], usage={"input_tokens": 1_000_000, "output_tokens": 0})])
    first = run_here(agent_spawn(role="implementer", task="Priced call", repo_path=str(repo)))
    assert first.cost_usd == Decimal("2")  # $2 per million input tokens
    ModelPrice.objects.create(
        model_prefix="claude-sonnet-5-5",
        family="sonnet",
        input_per_mtok=Decimal("3"),
        output_per_mtok=Decimal("12"),
        cache_write_5m_per_mtok=Decimal("3.75"),
        cache_write_1h_per_mtok=Decimal("6"),
        cache_read_per_mtok=Decimal("0.3"),
        effective_from="2026-11-23T00:00:00Z",
    )
    price_cache_clear()  # workers pick up a new price within a minute
    second = run_here(agent_spawn(role="implementer", task="Priced call again", repo_path=str(repo)))
    assert second.cost_usd == Decimal("3")
    first.refresh_from_db()
    assert first.cost_usd == Decimal("2") and UsageRecord.objects.get(agent=first).cost_usd == Decimal("2")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budget_usd": "-1"}, "budget_usd must be zero or more, not -1."),
        ({"budget_usd": "lots"}, "budget_usd must be a number of dollars, not 'lots'."),
        ({"budget_usd": "NaN"}, "budget_usd must be zero or more, not NaN."),
        ({"budget_tokens": "1.5"}, "budget_tokens must be a whole number of tokens, not '1.5'."),
    ],
)
def test_bad_budgets_are_refused_and_nothing_is_created(seeded, repo, worktrees_dir, options, message):
    with pytest.raises(CommandError) as error:
        call_command("spawn_agent", role="implementer", task="t", repo=str(repo), **options)
    assert str(error.value) == message
    assert not Agent.objects.exists() and not LedgerEntry.objects.exists()


def test_a_child_asking_for_more_than_its_parent_has_is_refused(seeded, repo, worktrees_dir):
    parent = agent_spawn(role="planner", task="Parent", repo_path=str(repo), budget_usd="1")
    with pytest.raises(
        CommandError, match=r"Agent \d+ has \$1.000000 of budget left; it can't give \$2.000000"
    ):
        call_command("spawn_agent", role="implementer", task="t", parent=parent.pk, budget_usd="2")
    assert Agent.objects.count() == 1
    parent.budget.refresh_from_db()
    assert parent.budget.limit_usd == Decimal("1") and LedgerEntry.objects.count() == 1


def test_a_model_with_no_price_at_all_is_refused(seeded, repo, worktrees_dir):
    ModelPrice.objects.all().delete()
    with pytest.raises(CommandError, match="No model prices are configured"):
        call_command("spawn_agent", role="implementer", task="t", repo=str(repo))
    assert not Agent.objects.exists()


def test_a_project_over_its_monthly_cap_spawns_nothing(seeded, repo, worktrees_dir):
    agent = agent_spawn(role="implementer", task="First", repo_path=str(repo))
    Project.objects.filter(pk=agent.project_id).update(monthly_budget_usd=Decimal("0"))
    with pytest.raises(CommandError, match="has used its budget for"):
        call_command("spawn_agent", role="implementer", task="Second", repo=str(repo))
    assert Agent.objects.count() == 1


def test_set_budget_refuses_a_limit_below_what_is_spent(seeded, repo, worktrees_dir):
    agent = agent_spawn(role="implementer", task="t", repo_path=str(repo), budget_usd="1")
    Budget.objects.filter(agent=agent).update(spent_usd=Decimal("0.5"))
    with pytest.raises(CommandError, match=r"has already spent \$0.500000; the limit can't be \$0.100000"):
        call_command("set_budget", str(agent.pk), "--usd", "0.1")
    with pytest.raises(CommandError, match="must be zero or more"):
        call_command("set_budget", str(agent.pk), "--usd", "-3")


def test_alerts_at_50_80_and_100_percent_each_once(seeded, repo, worktrees_dir):
    from budgets.services import budget_reserve, budget_settle

    agent = agent_spawn(role="implementer", task="Spend", repo_path=str(repo), budget_usd="1")
    for cost in ("0.55", "0.10", "0.20", "0.15"):
        reservation = budget_reserve(agent=agent, usd=Decimal("0.01"), tokens=10)
        budget_settle(reservation=reservation, usd=Decimal(cost), tokens=10)
    alerts = list(
        agent.events.filter(kind="budget_alert").order_by("id").values_list("data__percent", flat=True)
    )
    assert alerts == [50, 80, 100]
    budget = Budget.objects.get(agent=agent)
    assert budget.spent_usd == Decimal("1.00") and budget.reserved_usd == 0
    assert_ledger_matches(budget)


def test_agents_json_shows_spent_reserved_budget_and_why_it_waits(agents_env, repo):
    agents_env.script("Tight", [Turn([text("x")])])
    agent = run_here(agent_spawn(role="implementer", task="Tight", repo_path=str(repo), budget_usd="0.01"))
    out = StringIO()
    call_command("agents", "--json", stdout=out)
    import json

    (row,) = json.loads(out.getvalue())
    assert row["id"] == agent.pk and row["budget_usd"] == "0.010000"
    assert row["spent_usd"] == "0.000000" and row["reserved_usd"] == "0.000000"
    assert row["status"] == "waiting" and row["waiting_for"] == "budget"
    assert row["status_reason"].startswith("Out of budget")


def test_rollups_by_role_model_day_project_and_subtree_each_take_one_query(
    agents_env, repo, django_assert_num_queries
):
    from budgets import selectors

    agents_env.script(
        "Plan it", [Turn([text("planned")], usage={"input_tokens": 1_000_000, "output_tokens": 0})]
    )
    agents_env.script(
        "Build it", [Turn([text("built")], usage={"input_tokens": 0, "output_tokens": 100_000})]
    )
    planner = agent_spawn(role="planner", task="Plan it", repo_path=str(repo))
    builder = agent_spawn(role="implementer", task="Build it", parent=planner.pk, model="claude-haiku-4-5")
    run_here(builder)
    run_here(planner)

    with django_assert_num_queries(1):
        by_role = {r["role"]: r["cost_usd"] for r in selectors.cost_by_role(project_id=planner.project_id)}
    assert by_role == {"planner": Decimal("2"), "implementer": Decimal("0.5")}
    with django_assert_num_queries(1):
        by_model = {r["model"]: r["calls"] for r in selectors.cost_by_model()}
    assert by_model == {"claude-sonnet-5-5": 1, "claude-haiku-4-5": 1}
    with django_assert_num_queries(1):
        (day,) = selectors.cost_by_day()
    assert day["cost_usd"] == Decimal("2.5")
    with django_assert_num_queries(1):
        (project,) = selectors.cost_by_project()
    assert project["cost_usd"] == Decimal("2.5") and project["project_name"] == planner.project.name
    with django_assert_num_queries(1):
        subtree = selectors.subtree_totals(agent=planner)
    assert subtree["cost_usd"] == Decimal("2.5") and subtree["agents"] == 2
    # the daily rollup the selectors read is exactly the sum of the usage rows
    from budgets.models import UsageDaily

    daily = UsageDaily.objects.aggregate(cost=Sum("cost_usd"), calls=Sum("calls"), out=Sum("output_tokens"))
    usage = UsageRecord.objects.aggregate(cost=Sum("cost_usd"), out=Sum("output_tokens"))
    assert (daily["cost"], daily["calls"], daily["out"]) == (
        usage["cost"],
        UsageRecord.objects.count(),
        usage["out"],
    )


def test_project_admin_shows_rollups_and_a_new_cap_wakes_waiting_agents(admin_client, agents_env, repo):
    from django.urls import reverse

    agents_env.script("Capped", [Turn([text("done")])])
    agent = agent_spawn(role="implementer", task="Capped", repo_path=str(repo))
    Project.objects.filter(pk=agent.project_id).update(monthly_budget_usd=Decimal("0.01"))
    agent = run_here(agent)
    assert agent.waiting_for == WaitingFor.BUDGET and "project budget for" in agent.status_reason

    url = reverse("admin:agents_project_change", args=[agent.project_id])
    page = admin_client.get(url).content.decode()
    assert "Cost by role" in page and "Cost by model" in page
    project = agent.project
    response = admin_client.post(
        url,
        {
            "name": project.name,
            "team": project.team_id,
            "forge": "local",
            "test_timeout_seconds": "1800",
            "repo_path": project.repo_path,
            "base_branch": project.base_branch,
            "monthly_budget_usd": "10",
        },
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.status == S.PENDING
    assert run_here(agent).status == S.COMPLETED
    page = admin_client.get(reverse("dashboard:agent", args=[agent.pk])).content.decode()
    assert "no limit of its own" in page


def test_a_reservation_released_after_a_cancel_still_reaches_the_parent(seeded, repo, worktrees_dir):
    from budgets.services import budget_release, budget_reserve

    parent = agent_spawn(role="planner", task="Parent", repo_path=str(repo), budget_usd="1.00")
    child = agent_spawn(role="implementer", task="Child", parent=parent, budget_usd="0.40")
    in_flight = budget_reserve(agent=child, usd=Decimal("0.25"), tokens=100)
    agent_cancel(agent=child)  # returns the 0.15 not reserved
    assert Budget.objects.get(agent=parent).limit_usd == Decimal("0.75")

    budget_release(reservation=in_flight)  # the worker gives back what it held

    assert Budget.objects.get(agent=parent).limit_usd == Decimal("1.00")
    assert Budget.objects.get(agent=child).limit_usd == Decimal("0")
    for budget in Budget.objects.all():
        assert_ledger_matches(budget)
