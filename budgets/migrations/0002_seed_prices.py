from django.db import migrations

from budgets.seed import seed_prices


def forwards(apps, schema_editor):
    seed_prices(apps.get_model("budgets", "ModelPrice"))


class Migration(migrations.Migration):
    dependencies = [("budgets", "0001_initial")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
