"""django-q2 entry points of workflows: thin, by id."""


def advance_workflow(workflow_id: int) -> None:
    from workflows.services import workflow_advance

    workflow_advance(workflow_id=workflow_id)
