"""Projects, roles, agents and everything an agent leaves behind (workspace, transcript, mail)."""

from decimal import Decimal

from django.conf import settings
from django.db import models
from tree_queries.models import TreeNode

from budgets.fields import MicroUSDField


class Project(models.Model):
    """A local git repository that agents work on."""

    name = models.CharField(max_length=200)
    team = models.ForeignKey("teams.Team", on_delete=models.PROTECT, related_name="projects")
    repo_path = models.CharField(max_length=1000, unique=True, help_text="Absolute, symlinks resolved.")
    base_branch = models.CharField(max_length=255)
    monthly_budget_usd = MicroUSDField(
        null=True,
        blank=True,
        help_text="Hard cap per calendar month; blank: none.",
    )
    monthly_budget_tokens = models.BigIntegerField(null=True, blank=True, help_text="Blank: none.")
    test_command = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Shell command run in a fresh worktree of each merge result before the branch moves "
        "(e.g. `make test`). Blank: merges are not tested.",
    )
    test_timeout_seconds = models.PositiveIntegerField(default=1800)
    remote = models.CharField(
        max_length=1000, blank=True, help_text="Where agents push branches: a remote name, URL or path."
    )
    forge = models.CharField(
        max_length=20,
        choices=[("local", "Local (records pull requests here)"), ("github", "GitHub"), ("gitlab", "GitLab")],
        default="local",
    )
    forge_repo = models.CharField(
        max_length=300, blank=True, help_text="GitHub `owner/name` or GitLab project path, for pull requests."
    )
    forge_token_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the forge's token (the token is never stored).",
    )
    sandbox_network = models.BooleanField(
        default=False, help_text="Let Bash commands reach the network (the sandbox has none by default)."
    )
    sandbox_opt_out = models.BooleanField(
        default=False,
        help_text="Run Bash without a sandbox when none can be set up on the host (unsafe: only for trusted work).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class PermissionMode(models.TextChoices):
    """In the spirit of Claude Code's modes; project rules are checked first in every mode."""

    ASK = "ask", "Ask (every change needs approval)"
    ACCEPT_EDITS = "accept-edits", "Accept edits (file edits allowed, Bash asks)"
    PLAN = "plan", "Plan (read-only tools only)"
    AUTO = "auto", "Auto (rules decide, no asking)"


class Role(models.Model):
    """What an agent is for: its system prompt and the tools it may use. Seeded by a migration."""

    name = models.SlugField(max_length=50, unique=True)
    description = models.CharField(max_length=300, blank=True)
    system_prompt = models.TextField()
    tools = models.JSONField(default=list, help_text="Names of the tools this role may use.")
    default_model = models.CharField(max_length=100, blank=True, help_text="Blank: the site default.")
    max_turns = models.PositiveIntegerField(default=60, help_text="Model calls per agent at most.")
    budget_share = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.25"),
        help_text="Share of its parent's remaining budget a child of this role gets by default.",
    )
    permission_mode = models.CharField(
        max_length=20,
        choices=PermissionMode.choices,
        default=PermissionMode.AUTO,
        help_text="Default for its agents.",
    )
    max_run_seconds = models.PositiveIntegerField(
        default=2 * 3600, help_text="Time an agent may spend running (waiting not counted)."
    )

    def __str__(self) -> str:
        return self.name


class WaitingFor(models.TextChoices):
    NOTHING = "", "-"
    CHILDREN = "children", "its children"
    API = "api", "the API (parked)"
    BUDGET = "budget", "budget"
    APPROVAL = "approval", "approval of a tool call"


class AgentStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # queued for a worker
    RUNNING = "running", "Running"  # claimed by a worker holding a lease
    WAITING = "waiting", "Waiting"  # holds no worker: for its children, mail, or the API (wake_at)
    PAUSED = "paused", "Paused"  # by a person; resumes where it stopped
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATUSES = (AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED)


class Agent(TreeNode):
    """One Claude agent. `parent` (from TreeNode) is the agent that spawned it.

    Invariants: a RUNNING agent has a lease (token and expiry); the token totals equal the sum of
    its `budgets.UsageRecord` rows (both are written in one transaction by the usage service).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="agents")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="agents")
    task = models.TextField()
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=AgentStatus.choices, default=AgentStatus.PENDING)
    status_reason = models.TextField(blank=True, help_text="Why it waits, failed or was cancelled.")
    waiting_for = models.CharField(max_length=20, choices=WaitingFor.choices, default="", blank=True)
    result = models.TextField(blank=True, help_text="The agent's final answer.")
    spawned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Execution: who holds it. See agents.execution.
    attempts = models.PositiveIntegerField(default=0, help_text="Claims by a worker so far.")
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    worker = models.CharField(
        max_length=200, blank=True, help_text="host:pid of the last worker to claim it."
    )
    wake_at = models.DateTimeField(null=True, blank=True, help_text="A parked agent is queued again then.")
    api_failures = models.PositiveIntegerField(
        default=0, help_text="Consecutive parks for an unavailable API."
    )
    turns = models.PositiveIntegerField(default=0, help_text="Model calls made.")
    run_seconds = models.FloatField(default=0, help_text="Time spent running, over all runs.")

    # Totals kept in step with budgets.UsageRecord.
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cost_usd = MicroUSDField(default=0)

    # The event log (AgentEvent): the last sequence number given out, and what the agent is doing
    # now, both written by the same UPDATE that numbers an event (see agents.events).
    last_event_seq = models.PositiveIntegerField(default=0, editable=False)
    activity = models.CharField(max_length=200, blank=True, editable=False)
    permission_mode = models.CharField(
        max_length=20, choices=PermissionMode.choices, default=PermissionMode.AUTO
    )
    spawn_key = models.CharField(
        max_length=200,
        blank=True,
        help_text="A batch entry's key: spawning the same key again creates nothing.",
    )
    archived_at = models.DateTimeField(
        null=True, blank=True, help_text="Its worktree was removed (the branch stays)."
    )

    class Meta:
        indexes = [
            models.Index(fields=["status", "lease_expires_at"]),
            models.Index(fields=["status", "wake_at"]),
            models.Index(fields=["project", "created_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status="running") | models.Q(lease_token__isnull=False),
                name="running_agent_has_lease",
            ),
            models.UniqueConstraint(
                fields=["project", "spawn_key"],
                condition=~models.Q(spawn_key=""),
                name="one_agent_per_spawn_key",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.role_id and self.role.name}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class Workspace(models.Model):
    """The agent's git worktree and branch."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="workspace")
    path = models.CharField(max_length=1000)
    git_dir = models.CharField(max_length=1000, help_text="Recorded at creation; the agent can't move it.")
    branch = models.CharField(max_length=255)
    base_commit = models.CharField(max_length=64, help_text="Where the branch started.")
    head_commit = models.CharField(max_length=64, blank=True, help_text="Last commit made for the agent.")
    created_at = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True, help_text="When the worktree was removed.")

    def __str__(self) -> str:
        return self.branch


class EntryKind(models.TextChoices):
    USER = "user", "User message"  # the task, delivered mail, notes from the orchestrator
    ASSISTANT = "assistant", "Model reply"  # one per model request, with its timing
    TOOL_CALL = "tool_call", "Tool call started"
    TOOL_RESULT = "tool_result", "Tool result"


class TranscriptEntry(models.Model):
    """One step of an agent's conversation, in order. The conversation is rebuilt from these."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="transcript")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=EntryKind.choices)
    payload = models.JSONField()
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent", "seq"]
        constraints = [models.UniqueConstraint(fields=["agent", "seq"], name="transcript_seq_unique")]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.seq} {self.kind}"


class MessageKind(models.TextChoices):
    MESSAGE = "message", "Message"
    CHILD_RESULT = "child_result", "Child's result"


class Message(models.Model):
    """Mail to an agent: from another agent, a person, or a child's final result.

    Delivered (as a user message on the recipient's next model request) exactly once:
    `delivered_at` is set in the same transaction as the transcript entry that carries it.
    """

    recipient = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="inbox")
    sender = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="outbox")
    sent_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=MessageKind.choices, default=MessageKind.MESSAGE)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["recipient", "delivered_at"])]

    def __str__(self) -> str:
        return f"to #{self.recipient_id}: {self.body[:40]}"


class AgentEvent(models.Model):
    """The live log of an agent, numbered per agent: what the dashboard and `tail_agent` show.

    Invariant: for each agent, `seq` runs 1, 2, 3... without gaps, in commit order (numbers are
    given out under the agent row's lock, see agents.events.event_record), so a reader that has
    seen up to N asks for `seq > N` and misses nothing.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=30)
    data = models.JSONField(default=dict)
    by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent", "seq"]
        constraints = [models.UniqueConstraint(fields=["agent", "seq"], name="event_seq_unique_per_agent")]

    def __str__(self) -> str:
        return f"#{self.agent_id} {self.kind}"


class FileTouch(models.Model):
    """A file an agent wrote (Write, Edit): how two agents working on the same file are noticed."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="file_touches")
    path = models.CharField(max_length=1000, help_text="Relative to the worktree.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "path"], name="one_touch_per_agent_and_file")]
        indexes = [models.Index(fields=["project", "path"])]

    def __str__(self) -> str:
        return f"#{self.agent_id} wrote {self.path}"


class MergeStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    TESTING = "testing", "Testing"
    MERGED = "merged", "Merged"
    CONFLICT = "conflict", "Conflict"
    FAILED = "failed", "Failed"
    ABANDONED = "abandoned", "Abandoned"


class Merge(models.Model):
    """A request to merge an agent's branch into another branch, processed in order per project.

    Invariant: `status` is merged exactly when the target branch was moved to `result_commit`.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="merges")
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="merges")
    source_branch = models.CharField(max_length=255)
    target_branch = models.CharField(max_length=255)
    status = models.CharField(max_length=20, choices=MergeStatus.choices, default=MergeStatus.QUEUED)
    reason = models.TextField(blank=True)
    conflicts = models.JSONField(default=list, blank=True)
    test_output = models.TextField(blank=True)
    result_commit = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    resolver = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Agent resolving a conflict.",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["project", "status", "id"])]

    def __str__(self) -> str:
        return f"{self.source_branch} → {self.target_branch} ({self.status})"


class PullRequest(models.Model):
    """A pull request opened through the project's forge (the local forge only records it)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pull_requests")
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="pull_requests"
    )
    forge = models.CharField(max_length=20)
    head_branch = models.CharField(max_length=255)
    base_branch = models.CharField(max_length=255)
    title = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    number = models.PositiveIntegerField(null=True, blank=True)
    url = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.head_branch} → {self.base_branch}: {self.title}"


class RuleAction(models.TextChoices):
    ALLOW = "allow", "Allow"
    DENY = "deny", "Deny"
    ASK = "ask", "Ask"


class PermissionRule(models.Model):
    """`Tool(pattern)` decides calls of a project's agents: `Bash(git status*)` allow, `Bash(rm -rf*)`
    deny, `Write` ask. The pattern is a glob on the call's main input (Bash: the command; file
    tools: the path; Glob/Grep: the pattern). Deny wins over ask, ask over allow."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rules")
    action = models.CharField(max_length=10, choices=RuleAction.choices)
    pattern = models.CharField(max_length=1000, help_text="Tool or Tool(glob), e.g. Bash(git status*).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "action", "pattern"], name="one_rule_per_pattern")
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.pattern}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from agents.permissions import pattern_check

        try:
            pattern_check(self.pattern)
        except ValueError as exc:
            raise ValidationError({"pattern": str(exc)}) from None


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"


class ApprovalRequest(models.Model):
    """A tool call waiting for a person. The agent waits without a worker; the decision (who,
    when, what, with which input) is kept as the audit record."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="approvals")
    tool_use_id = models.CharField(max_length=100)
    tool = models.CharField(max_length=100)
    input = models.JSONField(help_text="What the model asked for.")
    approved_input = models.JSONField(null=True, blank=True, help_text="What runs, if a person edited it.")
    reason = models.CharField(max_length=300, blank=True, help_text="Why it needs approval (mode or rule).")
    status = models.CharField(max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True, help_text="A denial's reason (the model sees it).")
    escalated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "tool_use_id"], name="one_approval_per_call")]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"#{self.agent_id} {self.tool} ({self.status})"
