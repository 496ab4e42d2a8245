from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        from agents import hooks
        from workflows.services import on_agent_finished, step_end_of_turn, workflows_reap
        from workflows.tools import workflow_tools

        hooks.agent_finished.connect(on_agent_finished, dispatch_uid="workflows-advance")
        hooks.EXTRA_TOOLS.append(workflow_tools)
        hooks.END_OF_TURN.append(step_end_of_turn)
        hooks.REAPERS.append(workflows_reap)
