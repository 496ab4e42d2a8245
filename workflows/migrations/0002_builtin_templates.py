from pathlib import Path

from django.db import migrations


def forwards(apps, schema_editor):
    """Ship the built-in templates (workflows/builtin/*.yaml) that are missing."""
    from workflows.spec import parse

    Role = apps.get_model("agents", "Role")
    WorkflowTemplate = apps.get_model("workflows", "WorkflowTemplate")
    roles = set(Role.objects.values_list("name", flat=True))
    for path in sorted((Path(__file__).resolve().parent.parent / "builtin").glob("*.yaml")):
        if not WorkflowTemplate.objects.filter(name=path.stem).exists():
            text = path.read_text()
            spec = parse(text, roles=roles)
            WorkflowTemplate.objects.create(
                name=path.stem, description=spec.description, yaml=text, builtin=True
            )


class Migration(migrations.Migration):
    dependencies = [("workflows", "0001_workflows"), ("agents", "0010_git_agent_tools")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
