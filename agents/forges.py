"""Pull requests through a pluggable forge: GitHub, GitLab, or the local forge that only records.

The project chooses (`Project.forge`, `forge_repo`, and `forge_token_env`: the name of the
environment variable with the token; tokens are never stored). Every forge records the pull
request in our database too, so the dashboard and tests see it the same way.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

from agents.errors import OrchestratorError
from agents.models import Agent, Project, PullRequest


@dataclass(frozen=True)
class OpenedPullRequest:
    number: int | None
    url: str


class Forge(Protocol):
    name: str

    def open_pull_request(self, *, head: str, base: str, title: str, body: str) -> OpenedPullRequest: ...


class LocalForge:
    """Records the request and nothing else: for local use and tests."""

    name = "local"

    def __init__(self, project: Project) -> None:
        self.project = project

    def open_pull_request(self, *, head: str, base: str, title: str, body: str) -> OpenedPullRequest:
        number = PullRequest.objects.filter(project=self.project).count() + 1
        return OpenedPullRequest(number=number, url=f"local://{self.project.name}/pulls/{number}")


class _HttpForge:
    name = ""

    def __init__(self, project: Project) -> None:
        if not project.forge_repo:
            raise OrchestratorError(f"Project {project.name}: set its forge repository (forge_repo) first.")
        token = os.environ.get(project.forge_token_env or "", "")
        if not token:
            raise OrchestratorError(
                f"Project {project.name}: the {self.name} token is not set: put it in the environment variable "
                f"named by forge_token_env ({project.forge_token_env or 'not configured'})."
            )
        self.project, self.token = project, token

    def _post(self, url: str, payload: dict, headers: dict[str, str]) -> dict:
        request = urllib.request.Request(
            url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise OrchestratorError(f"{self.name} refused the pull request ({exc.code}): {detail}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise OrchestratorError(f"Could not reach {self.name}: {exc}") from None


class GitHubForge(_HttpForge):
    name = "github"
    api = "https://api.github.com"

    def open_pull_request(self, *, head: str, base: str, title: str, body: str) -> OpenedPullRequest:
        data = self._post(
            f"{self.api}/repos/{self.project.forge_repo}/pulls",
            {"title": title, "body": body, "head": head, "base": base},
            {"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json"},
        )
        return OpenedPullRequest(number=data.get("number"), url=data.get("html_url", ""))


class GitLabForge(_HttpForge):
    name = "gitlab"
    api = os.environ.get("GITLAB_API_URL", "https://gitlab.com/api/v4")

    def open_pull_request(self, *, head: str, base: str, title: str, body: str) -> OpenedPullRequest:
        project = urllib.request.quote(self.project.forge_repo, safe="")
        data = self._post(
            f"{self.api}/projects/{project}/merge_requests",
            {"title": title, "description": body, "source_branch": head, "target_branch": base},
            {"PRIVATE-TOKEN": self.token},
        )
        return OpenedPullRequest(number=data.get("iid"), url=data.get("web_url", ""))


FORGES: dict[str, type] = {"local": LocalForge, "github": GitHubForge, "gitlab": GitLabForge}


def forge_for(project: Project) -> Forge:
    try:
        return FORGES[project.forge](project)
    except KeyError:
        raise OrchestratorError(f"Project {project.name}: unknown forge {project.forge!r}.") from None


def pull_request_open(
    *, agent: Agent, title: str, body: str = "", head: str | None = None, base: str | None = None
) -> PullRequest:
    """Open a pull request of the agent's branch (or `head`) into the project's base branch."""
    project = agent.project
    head = head or agent.workspace.branch
    base = base or project.base_branch
    title = (title or "").strip()
    if not title:
        raise OrchestratorError("A pull request needs a title.")
    forge = forge_for(project)
    opened = forge.open_pull_request(head=head, base=base, title=title, body=body)
    return PullRequest.objects.create(
        project=project,
        agent=agent,
        forge=forge.name,
        head_branch=head,
        base_branch=base,
        title=title[:300],
        body=body,
        number=opened.number,
        url=opened.url,
    )
