import time

from django.core.management.base import BaseCommand, CommandError

from agents.management.commands._common import add_user_argument, check_repo_for, run_service, user_or_error
from workflows.models import WorkflowStatus
from workflows.selectors import workflow_steps
from workflows.services import workflow_cost, workflow_start


class Command(BaseCommand):
    help = "Start a workflow from a template and print its id; --wait blocks until it ends."

    def add_arguments(self, parser):
        parser.add_argument("template", help="Template name, e.g. feature.")
        parser.add_argument("--input", required=True, help="What the workflow should build.")
        parser.add_argument("--repo", required=True, help="Path of the git repository.")
        parser.add_argument(
            "--budget-usd", help="Dollars for the whole workflow (shared by step budget_share)."
        )
        parser.add_argument(
            "--wait", action="store_true", help="Wait until it completes, fails or is cancelled."
        )
        parser.add_argument("--timeout", type=float, help="With --wait: give up after this many seconds.")
        add_user_argument(parser)

    def handle(self, *args, **options):
        user = user_or_error(options)
        check_repo_for(user, options["repo"])
        workflow = run_service(
            lambda: workflow_start(
                template=options["template"],
                input=options["input"],
                repo_path=options["repo"],
                budget_usd=options["budget_usd"],
                by=user,
            )
        )
        self.stdout.write(str(workflow.pk))
        if not options["wait"]:
            return
        deadline = None if options["timeout"] is None else time.monotonic() + options["timeout"]
        while True:
            workflow.refresh_from_db()
            if workflow.status != WorkflowStatus.RUNNING:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise CommandError(
                    f"Workflow {workflow.pk} has not finished after {options['timeout']:.0f} s."
                )
            time.sleep(0.5)
        for step in workflow_steps(workflow=workflow):
            for run in step["runs"]:
                item = f"[{run.item_index}]" if run.item_index >= 0 else ""
                agent = f"agent {run.agent_id}" if run.agent_id else "no agent"
                cost = run.agent.cost_usd if run.agent else 0
                self.stdout.write(f"{step['id']}{item} round {run.round}: {run.status} ({agent}, ${cost})")
        self.stdout.write(f"status: {workflow.status}")
        if workflow.status_reason:
            self.stdout.write(f"reason: {workflow.status_reason}")
        self.stdout.write(f"cost: ${workflow_cost(workflow=workflow)}")
        if workflow.status != WorkflowStatus.COMPLETED:
            raise CommandError(f"Workflow {workflow.pk} {workflow.status}: {workflow.status_reason}")
