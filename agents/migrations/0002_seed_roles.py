from django.db import migrations

from agents.roles import seed_roles


def forwards(apps, schema_editor):
    seed_roles(apps.get_model("agents", "Role"))


class Migration(migrations.Migration):
    dependencies = [("agents", "0001_initial")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
