"""Access checks, in one place: pages, websockets, commands and the admin ask here."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from agents.models import Project
from teams.models import ACTING_ROLES, DEFAULT_TEAM_NAME, Membership, Team


def default_team() -> Team:
    """Projects created without a team (the CLI, embedded use) belong to this one."""
    team, _ = Team.objects.get_or_create(name=DEFAULT_TEAM_NAME)
    return team


def projects_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(team__memberships__user=user)


def can_act(user: AbstractBaseUser | AnonymousUser, project_id: int) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    return Membership.objects.filter(user=user, team__projects__pk=project_id, role__in=ACTING_ROLES).exists()


def projects_acting(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Project]:
    """The projects in which `user` may act (spawn, control, message, budget)."""
    projects = projects_visible_to(user)
    if user.is_authenticated and not user.is_superuser:
        projects = projects.filter(team__memberships__user=user, team__memberships__role__in=ACTING_ROLES)
    return projects


def team_for_new_project(user: AbstractBaseUser) -> Team | None:
    """Where a project a person creates goes: the default team for superusers, else their first
    team in which they may act."""
    if user.is_superuser:
        return default_team()
    membership = (
        Membership.objects.filter(user=user, role__in=ACTING_ROLES)
        .select_related("team")
        .order_by("pk")
        .first()
    )
    return membership.team if membership else None
