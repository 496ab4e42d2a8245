from django.db import migrations

from agents.roles import add_git_tools


def forwards(apps, schema_editor):
    add_git_tools(apps.get_model("agents", "Role"))


class Migration(migrations.Migration):
    dependencies = [("agents", "0009_git_workspaces")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
