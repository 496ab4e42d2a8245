from django.db import migrations

from agents.roles import add_budget_tools


def forwards(apps, schema_editor):
    add_budget_tools(apps.get_model("agents", "Role"))


class Migration(migrations.Migration):
    dependencies = [("agents", "0005_budgets")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
