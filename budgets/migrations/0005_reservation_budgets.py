import django.db.models.deletion
from django.db import migrations, models


def drop_open_reservations(apps, schema_editor):
    # Reservations are transient; any left belong to runs that no longer exist.
    apps.get_model("budgets", "Reservation").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("budgets", "0004_money_in_micro_dollars")]

    operations = [
        migrations.RunPython(drop_open_reservations, migrations.RunPython.noop),
        migrations.RemoveField(model_name="reservation", name="budgets"),
        migrations.AddField(
            model_name="reservation",
            name="agent_budget",
            field=models.ForeignKey(
                default=None,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="budgets.budget",
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="reservation",
            name="project_budget",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="budgets.budget",
            ),
        ),
    ]
