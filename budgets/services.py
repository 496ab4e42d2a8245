"""Writes of the budgets app: usage and cost of replies, budgets, reservations and the ledger.

Money moves only here. Every balance change on a Budget row is made by a conditional UPDATE and
written to the append-only ledger in the same transaction.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.errors import OrchestratorError
from agents.events import Kind, event_record
from agents.models import Agent, Project, TranscriptEntry
from agents.runtime.exceptions import OutOfBudget
from budgets.fields import MicroUSDField, usd_value
from budgets.models import Budget, LedgerEntry, LedgerKind, Reservation, UsageDaily, UsageRecord
from budgets.pricing import TokenUsage, cost_of, price_for_model

MICRO = Decimal("0.000001")
ALERT_PERCENTS = (50, 80, 100)


class BudgetError(OrchestratorError):
    """Bad budget input (negative, not a number, more than the parent has)."""


MAX_USD = Decimal(10**9)  # far beyond any budget, well inside what the micro-dollar columns hold
MAX_TOKENS = 10**15


def parse_usd(value: Any, *, field: str = "budget_usd") -> Decimal | None:
    """A dollar amount from the CLI, a batch file or a tool; None for blank."""
    if value is None or value == "":
        return None
    try:
        amount = Decimal(str(value).strip().lstrip("$"))
    except InvalidOperation:
        raise BudgetError(f"{field} must be a number of dollars, not {value!r}.") from None
    if not amount.is_finite() or amount < 0:
        raise BudgetError(f"{field} must be zero or more, not {value}.")
    if amount > MAX_USD:
        raise BudgetError(f"{field} must be at most ${MAX_USD:,}, not {value}.")
    return amount.quantize(MICRO)


def parse_tokens(value: Any, *, field: str = "budget_tokens") -> int | None:
    if value is None or value == "":
        return None
    try:
        tokens = int(str(value).strip())
    except ValueError:
        raise BudgetError(f"{field} must be a whole number of tokens, not {value!r}.") from None
    if tokens < 0 or tokens > MAX_TOKENS:
        raise BudgetError(f"{field} must be between 0 and {MAX_TOKENS:,}, not {value}.")
    return tokens


# --- Usage ------------------------------------------------------------------------------------


@transaction.atomic
def usage_record(
    *, agent: Agent, entry: TranscriptEntry, model: str, usage: dict, **agent_updates: Any
) -> UsageRecord:
    """Price one reply's usage and add it to the agent's totals (with any `agent_updates`), in one
    transaction. The one-to-one on `entry` makes a second record for the same reply fail loudly.
    """
    tokens = TokenUsage.from_api(usage)
    chosen = price_for_model(model=model)
    cost = cost_of(tokens, chosen.price)
    record = UsageRecord.objects.create(
        agent=agent,
        transcript_entry=entry,
        model=model,
        price=chosen.price,
        pricing_rule=chosen.rule,
        input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens,
        cache_write_5m_tokens=tokens.cache_write_5m_tokens,
        cache_write_1h_tokens=tokens.cache_write_1h_tokens,
        cache_read_tokens=tokens.cache_read_tokens,
        cost_usd=cost,
    )
    Agent.objects.filter(pk=agent.pk).update(
        input_tokens=F("input_tokens") + tokens.input_tokens,
        output_tokens=F("output_tokens") + tokens.output_tokens,
        cache_write_tokens=F("cache_write_tokens")
        + tokens.cache_write_5m_tokens
        + tokens.cache_write_1h_tokens,
        cache_read_tokens=F("cache_read_tokens") + tokens.cache_read_tokens,
        cost_usd=F("cost_usd") + usd_value(cost),
        **agent_updates,
    )
    _add_to_daily(agent=agent, model=model, tokens=tokens, cost=cost)
    return record


def _add_to_daily(*, agent: Agent, model: str, tokens: TokenUsage, cost: Decimal) -> None:
    """One upsert into the daily rollup (same SQL on PostgreSQL and SQLite >= 3.24)."""
    table = UsageDaily._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (project_id, day, role, model, calls, input_tokens, output_tokens,"
            " cache_read_tokens, cost_usd) VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s)"
            " ON CONFLICT (project_id, day, role, model) DO UPDATE SET calls = {t}.calls + 1,"
            " input_tokens = {t}.input_tokens + excluded.input_tokens,"
            " output_tokens = {t}.output_tokens + excluded.output_tokens,"
            " cache_read_tokens = {t}.cache_read_tokens + excluded.cache_read_tokens,"
            " cost_usd = {t}.cost_usd + excluded.cost_usd".replace("{t}", table),
            [
                agent.project_id,
                timezone.now().date(),
                agent.role.name,
                model,
                tokens.input_tokens,
                tokens.output_tokens,
                tokens.cache_read_tokens,
                MicroUSDField().get_prep_value(cost),
            ],
        )


# --- Budgets ----------------------------------------------------------------------------------


def _move(
    budget: Budget, kind: str, *, agent: Agent | None, note: str = "", guard: Q | None = None, **deltas
) -> bool:
    """Apply deltas to a budget's balances and ledger them, if `guard` holds. Returns whether it did."""
    query = Budget.objects.filter(pk=budget.pk)
    if guard is not None:
        query = query.filter(guard)
    changes = {
        name: F(name) + (usd_value(value) if name.endswith("_usd") else value)
        for name, value in deltas.items()
        if value
    }
    if changes and not query.update(**changes):
        return False
    LedgerEntry.objects.create(budget=budget, agent=agent, kind=kind, note=note[:300], **deltas)
    return True


def _fits(usd: Decimal, tokens: int) -> Q:
    """Budget has room for `usd` and `tokens` more (a NULL limit is no limit)."""
    return (
        Q(limit_usd__isnull=True) | Q(limit_usd__gte=F("spent_usd") + F("reserved_usd") + usd_value(usd))
    ) & (
        Q(limit_tokens__isnull=True) | Q(limit_tokens__gte=F("spent_tokens") + F("reserved_tokens") + tokens)
    )


def project_month_budget(*, project: Project, today: date | None = None) -> Budget | None:
    """This month's budget of a project with a monthly cap (created on first use)."""
    if project.monthly_budget_usd is None and project.monthly_budget_tokens is None:
        return None
    month = (today or timezone.now().date()).replace(day=1)
    budget, created = Budget.objects.get_or_create(
        project=project,
        month=month,
        defaults={"limit_usd": project.monthly_budget_usd, "limit_tokens": project.monthly_budget_tokens},
    )
    if created:
        LedgerEntry.objects.create(
            budget=budget,
            kind=LedgerKind.SET,
            limit_usd=budget.limit_usd or 0,
            limit_tokens=budget.limit_tokens or 0,
            note=f"monthly cap for {month:%Y-%m}",
        )
    return budget


def project_check_cap(*, project: Project) -> None:
    """A project over its monthly cap spawns nothing more."""
    budget = project_month_budget(project=project)
    if budget is None:
        return
    if (budget.limit_usd is not None and budget.spent_usd >= budget.limit_usd) or (
        budget.limit_tokens is not None and budget.spent_tokens >= budget.limit_tokens
    ):
        raise BudgetError(
            f"Project {project.name} has used its budget for {budget.month:%B %Y} "
            f"(${budget.spent_usd} of ${budget.limit_usd}); raise monthly_budget_usd in the admin to spawn more."
        )


def budget_create(
    *,
    agent: Agent,
    usd: Decimal | None,
    tokens: int | None,
    cap_to_parent: bool = False,
) -> Budget:
    """The new agent's budget, inside the spawning transaction.

    A child of a parent with a limit gets `usd` (or its role's share of what the parent has
    left), carved out of the parent's limit; asking for more than is left is an error, or with
    `cap_to_parent` (the SpawnAgent tool) gets what is left.
    """
    budget = Budget.objects.create(agent=agent)
    parent_budget = Budget.objects.select_for_update().filter(agent_id=agent.parent_id).first()
    if parent_budget is not None and parent_budget.limit_usd is not None:
        usd = _carve(parent_budget, agent, usd, cap_to_parent, share=agent.role.budget_share)
    if usd is None and tokens is None:
        return budget
    _move(
        budget,
        LedgerKind.SET,
        agent=agent,
        limit_usd=usd or 0,
        limit_tokens=tokens or 0,
        note="initial limit",
    )
    Budget.objects.filter(pk=budget.pk).update(limit_usd=usd, limit_tokens=tokens)
    budget.refresh_from_db()
    return budget


def _carve(parent_budget: Budget, child: Agent, usd: Decimal | None, cap: bool, *, share: Decimal) -> Decimal:
    available = parent_budget.available_usd
    if usd is None:
        usd = (available * share).quantize(MICRO)
    elif usd > available:
        if not cap:
            raise BudgetError(
                f"Agent {child.parent_id} has ${available} of budget left; it can't give ${usd} to a child."
            )
        usd = available
    moved = _move(
        parent_budget,
        LedgerKind.ALLOCATE,
        agent=child,
        limit_usd=-usd,
        note=f"carved out for agent {child.pk}",
        guard=Q(limit_usd__gte=F("spent_usd") + F("reserved_usd") + usd_value(usd)),
    )
    if not moved:
        raise BudgetError(f"Agent {child.parent_id}'s budget changed meanwhile; try again.")
    return usd


class _NoRoom(Exception):
    pass


def budget_reserve(*, agent: Agent, usd: Decimal, tokens: int) -> Reservation:
    """Hold the worst case of the next call against the agent's and its project's budgets.

    All or nothing, in one conditional UPDATE: raises OutOfBudget (and holds nothing) unless
    every one of them has room.
    """
    usd = usd.quantize(MICRO)
    budgets = [b for b in (_agent_budget(agent), project_month_budget(project=agent.project)) if b]
    ids = [b.pk for b in budgets]
    try:
        with transaction.atomic():
            held = (
                Budget.objects.filter(pk__in=ids)
                .filter(_fits(usd, tokens))
                .update(
                    reserved_usd=F("reserved_usd") + usd_value(usd),
                    reserved_tokens=F("reserved_tokens") + tokens,
                )
            )
            if held < len(ids):
                raise _NoRoom  # rolls the partial update back
            LedgerEntry.objects.bulk_create(
                LedgerEntry(
                    budget_id=pk,
                    agent=agent,
                    kind=LedgerKind.RESERVE,
                    reserved_usd=usd,
                    reserved_tokens=tokens,
                )
                for pk in ids
            )
            return Reservation.objects.create(
                agent=agent,
                usd=usd,
                tokens=tokens,
                agent_budget_id=ids[0],
                project_budget_id=ids[1] if len(ids) > 1 else None,
            )
    except _NoRoom:
        latest = list(Budget.objects.filter(pk__in=ids))
        short = next((b for b in latest if not _has_room(b, usd, tokens)), latest[0])
        raise OutOfBudget(_out_of_budget_reason(short, usd, tokens), usd=usd, tokens=tokens) from None


def _has_room(budget: Budget, usd: Decimal, tokens: int) -> bool:
    return (
        budget.limit_usd is None or budget.spent_usd + budget.reserved_usd + usd <= budget.limit_usd
    ) and (
        budget.limit_tokens is None
        or budget.spent_tokens + budget.reserved_tokens + tokens <= budget.limit_tokens
    )


def _agent_budget(agent: Agent) -> Budget:
    budget, _ = Budget.objects.get_or_create(agent=agent)
    return budget


def _out_of_budget_reason(budget: Budget, usd: Decimal, tokens: int) -> str:
    owner = (
        f"agent {budget.agent_id}'s budget" if budget.agent_id else f"project budget for {budget.month:%B %Y}"
    )
    if budget.limit_usd is not None and budget.limit_usd < budget.spent_usd + budget.reserved_usd + usd:
        return (
            f"Out of budget: the next call may cost up to ${usd}, and the {owner} has "
            f"${budget.available_usd} left of ${budget.limit_usd} (spent ${budget.spent_usd})."
        )
    return (
        f"Out of budget: the next call may use up to {tokens} tokens, and the {owner} has "
        f"{budget.limit_tokens - budget.spent_tokens - budget.reserved_tokens} tokens left."
    )


def budget_settle(*, reservation: Reservation, usd: Decimal, tokens: int) -> None:
    """Replace a reservation with the real cost (call inside the transaction recording the reply)."""
    ids = reservation.budget_ids
    deltas = {
        "reserved_usd": -reservation.usd,
        "reserved_tokens": -reservation.tokens,
        "spent_usd": usd,
        "spent_tokens": tokens,
    }
    if usd <= reservation.usd and tokens <= reservation.tokens:  # the usual case: no limit can be crossed
        Budget.objects.filter(pk__in=ids).update(
            reserved_usd=F("reserved_usd") - usd_value(reservation.usd),
            reserved_tokens=F("reserved_tokens") - reservation.tokens,
            spent_usd=F("spent_usd") + usd_value(usd),
            spent_tokens=F("spent_tokens") + tokens,
        )
        LedgerEntry.objects.bulk_create(
            LedgerEntry(budget_id=pk, agent=reservation.agent, kind=LedgerKind.SETTLE, **deltas) for pk in ids
        )
    else:
        for budget in Budget.objects.filter(pk__in=ids):
            _settle_over_reservation(budget, reservation, deltas)
    for budget in Budget.objects.filter(pk__in=ids, limit_usd__isnull=False):
        _alert(budget, reservation.agent)
    Reservation.objects.filter(pk=reservation.pk).update(closed_at=timezone.now())


def _settle_over_reservation(budget: Budget, reservation: Reservation, deltas: dict[str, Any]) -> None:
    """The reply cost more than its worst case (only if the API reports usage our bound doesn't
    cover). The truth is recorded, and if a limit would be crossed it is raised to meet it,
    loudly, rather than losing the reply."""
    try:
        with transaction.atomic():
            _move(budget, LedgerKind.SETTLE, agent=reservation.agent, **deltas)
    except IntegrityError:
        _move(
            budget,
            LedgerKind.SET,
            agent=reservation.agent,
            limit_usd=deltas["spent_usd"],
            limit_tokens=deltas["spent_tokens"],
            note="overrun: the reply cost more than was reserved",
        )
        _move(budget, LedgerKind.SETTLE, agent=reservation.agent, **deltas)
        event_record(reservation.agent_id, Kind.BUDGET_OVERRUN, {"budget": budget.pk})


def budget_release(*, reservation: Reservation) -> None:
    """Give a reservation back (the call failed, or the worker holding it died)."""
    with transaction.atomic():
        if not Reservation.objects.filter(pk=reservation.pk, closed_at__isnull=True).update(
            closed_at=timezone.now()
        ):
            return
        for budget in Budget.objects.filter(pk__in=reservation.budget_ids):
            _move(
                budget,
                LedgerKind.RELEASE,
                agent=reservation.agent,
                reserved_usd=-reservation.usd,
                reserved_tokens=-reservation.tokens,
            )
            if (
                budget.agent_id
                and Budget.objects.filter(pk=budget.pk, returned=True, limit_usd__isnull=False).exists()
            ):
                _forward_to_parent(budget, reservation.agent, reservation.usd)


def budget_has_room(*, agent: Agent, usd: Decimal, tokens: int) -> bool:
    """Would a reservation fit now? Locks the budgets, so a raise can't slip in before the caller
    decides to wait (call inside its transaction)."""
    budgets = [b for b in (_agent_budget(agent), project_month_budget(project=agent.project)) if b]
    locked = Budget.objects.select_for_update().filter(pk__in=[b.pk for b in budgets])
    return locked.filter(_fits(usd, tokens)).count() == len(budgets)


def _forward_to_parent(budget: Budget, agent: Agent, usd: Decimal) -> None:
    """The agent finished (its leftover already went back) while this was reserved: send it on."""
    parent_budget = Budget.objects.filter(agent_id=agent.parent_id, limit_usd__isnull=False).first()
    if parent_budget is None:
        return
    _move(
        budget,
        LedgerKind.RETURN,
        agent=agent,
        limit_usd=-usd,
        note=f"released after finishing, to {agent.parent_id}",
    )
    _move(
        parent_budget,
        LedgerKind.RETURN,
        agent=agent,
        limit_usd=usd,
        note=f"released after agent {agent.pk} finished",
    )


def budget_release_stale(*, agent: Agent) -> None:
    """At claim: reservations still open belong to a run that died; release them."""
    for reservation in Reservation.objects.filter(agent=agent, closed_at__isnull=True):
        budget_release(reservation=reservation)


def _alert(budget: Budget, agent: Agent) -> None:
    budget_id = budget.pk
    percent = budget.percent_used
    if percent is None:
        return
    crossed = [p for p in ALERT_PERCENTS if budget.alerted_percent < p <= percent]
    if crossed and Budget.objects.filter(pk=budget_id, alerted_percent=budget.alerted_percent).update(
        alerted_percent=crossed[-1]
    ):
        scope = "agent" if budget.agent_id else "project"
        event_record(
            agent.pk,
            Kind.BUDGET_ALERT,
            {
                "percent": crossed[-1],
                "scope": scope,
                "budget": budget_id,
                "spent_usd": str(budget.spent_usd),
                "limit_usd": str(budget.limit_usd),
            },
        )


@transaction.atomic
def budget_return_leftover(*, agent: Agent) -> Decimal:
    """A finished child's unspent budget goes back to its parent, exactly once."""
    budget = Budget.objects.select_for_update().filter(agent=agent).first()
    if budget is None or agent.parent_id is None or budget.returned or budget.limit_usd is None:
        return Decimal(0)
    parent_budget = Budget.objects.select_for_update().filter(agent_id=agent.parent_id).first()
    if parent_budget is None or parent_budget.limit_usd is None:
        return Decimal(0)
    leftover = budget.limit_usd - budget.spent_usd - budget.reserved_usd
    if not Budget.objects.filter(pk=budget.pk, returned=False).update(returned=True):
        return Decimal(0)
    if leftover > 0:
        _move(budget, LedgerKind.RETURN, agent=agent, limit_usd=-leftover, note=f"to agent {agent.parent_id}")
        _move(
            parent_budget, LedgerKind.RETURN, agent=agent, limit_usd=leftover, note=f"from agent {agent.pk}"
        )
    return leftover


def budget_set(
    *,
    agent: Agent,
    usd: Any = None,
    tokens: Any = None,
    note: str = "set by a person",
    by: AbstractBaseUser | None = None,
) -> Budget:
    """Set an agent's limits (a person's decision: the money does not come from the parent).
    An agent waiting for budget resumes."""
    usd, tokens = parse_usd(usd, field="usd"), parse_tokens(tokens, field="tokens")
    if usd is None and tokens is None:
        raise BudgetError("Give a new limit: --usd N (or --tokens N).")
    with transaction.atomic():
        budget = Budget.objects.select_for_update().get_or_create(agent=agent)[0]
        if usd is not None:
            if usd < budget.spent_usd + budget.reserved_usd:
                raise BudgetError(
                    f"Agent {agent.pk} has already spent ${budget.spent_usd}"
                    f"{f' and reserved ${budget.reserved_usd}' if budget.reserved_usd else ''}; "
                    f"the limit can't be ${usd}."
                )
            _move(budget, LedgerKind.SET, agent=agent, limit_usd=usd - (budget.limit_usd or 0), note=note)
            Budget.objects.filter(pk=budget.pk).update(limit_usd=usd, alerted_percent=0)
        if tokens is not None:
            if tokens < budget.spent_tokens + budget.reserved_tokens:
                raise BudgetError(f"Agent {agent.pk} has already used {budget.spent_tokens} tokens.")
            _move(
                budget,
                LedgerKind.SET,
                agent=agent,
                limit_tokens=tokens - (budget.limit_tokens or 0),
                note=note,
            )
            Budget.objects.filter(pk=budget.pk).update(limit_tokens=tokens)
        budget.refresh_from_db()
        event_record(
            agent.pk,
            Kind.BUDGET_CHANGED,
            {
                "limit_usd": None if budget.limit_usd is None else str(budget.limit_usd),
                "limit_tokens": budget.limit_tokens,
                "note": note,
            },
            by=by,
        )
        _wake_if_waiting_for_budget(agent)
    return budget


def budget_grant(*, parent: Agent, child: Agent, usd: Any) -> Decimal:
    """A parent gives a child more of its own budget (the GrantBudget tool)."""
    amount = parse_usd(usd, field="amount_usd")
    if not amount:
        raise BudgetError("amount_usd must be more than zero.")
    if child.parent_id != parent.pk:
        raise BudgetError(f"Agent {child.pk} is not your child.")
    with transaction.atomic():
        parent_budget = _agent_budget(parent)
        child_budget = Budget.objects.select_for_update().get_or_create(agent=child)[0]
        if child_budget.limit_usd is None:
            raise BudgetError(f"Agent {child.pk} has no dollar limit; it needs no grant.")
        if parent_budget.limit_usd is not None and not _move(
            parent_budget,
            LedgerKind.ALLOCATE,
            agent=child,
            limit_usd=-amount,
            note=f"granted to agent {child.pk}",
            guard=Q(limit_usd__gte=F("spent_usd") + F("reserved_usd") + usd_value(amount)),
        ):
            parent_budget.refresh_from_db()
            raise BudgetError(f"You have ${parent_budget.available_usd} left; you can't grant ${amount}.")
        if child_budget.limit_usd is not None:
            _move(
                child_budget,
                LedgerKind.SET,
                agent=child,
                limit_usd=amount,
                note=f"granted by agent {parent.pk}",
            )
            Budget.objects.filter(pk=child_budget.pk).update(returned=False, alerted_percent=0)
        _wake_if_waiting_for_budget(child)
    return amount


def _wake_if_waiting_for_budget(agent: Agent) -> None:
    from agents.models import AgentStatus, WaitingFor
    from agents.services import agent_transition
    from agents.tasks import enqueue_agent_run

    waiting = Q(status=AgentStatus.WAITING, waiting_for=WaitingFor.BUDGET)
    if agent_transition(agent_id=agent.pk, to=AgentStatus.PENDING, reason="Budget raised.", where=waiting):
        transaction.on_commit(lambda: enqueue_agent_run(agent_id=agent.pk))


def project_budget_apply(*, project: Project) -> None:
    """A project's monthly cap changed: apply it to this month and let waiting agents try again."""
    from agents.models import AgentStatus, WaitingFor

    with transaction.atomic():
        budget = project_month_budget(project=project)
        if budget is not None:
            old_usd, old_tokens = budget.limit_usd, budget.limit_tokens
            Budget.objects.filter(pk=budget.pk).update(
                limit_usd=project.monthly_budget_usd, limit_tokens=project.monthly_budget_tokens
            )
            LedgerEntry.objects.create(
                budget=budget,
                kind=LedgerKind.SET,
                limit_usd=(project.monthly_budget_usd or 0) - (old_usd or 0),
                limit_tokens=(project.monthly_budget_tokens or 0) - (old_tokens or 0),
                note="monthly cap changed",
            )
        waiting = project.agents.filter(status=AgentStatus.WAITING, waiting_for=WaitingFor.BUDGET)
        for agent in waiting:
            _wake_if_waiting_for_budget(agent)
