"""Teams own projects; agent events get a per-agent sequence number (the live event log)."""

import django.db.models.deletion
from django.db import migrations, models


def assign_default_team(apps, schema_editor):
    Team = apps.get_model("teams", "Team")
    Project = apps.get_model("agents", "Project")
    if Project.objects.exists():
        team, _ = Team.objects.get_or_create(name="Default")
        Project.objects.update(team=team)


def number_events(apps, schema_editor):
    Agent = apps.get_model("agents", "Agent")
    AgentEvent = apps.get_model("agents", "AgentEvent")
    for agent_id in AgentEvent.objects.values_list("agent_id", flat=True).distinct():
        events = list(AgentEvent.objects.filter(agent_id=agent_id).order_by("id"))
        for number, event in enumerate(events, start=1):
            event.seq = number
        AgentEvent.objects.bulk_update(events, ["seq"])
        Agent.objects.filter(pk=agent_id).update(last_event_seq=len(events))


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0007_money_in_micro_dollars"),
        ("teams", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="team",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="projects",
                to="teams.team",
            ),
        ),
        migrations.RunPython(assign_default_team, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="project",
            name="team",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="projects", to="teams.team"
            ),
        ),
        migrations.AddField(
            model_name="agent",
            name="activity",
            field=models.CharField(blank=True, editable=False, max_length=200),
        ),
        migrations.AddField(
            model_name="agent",
            name="last_event_seq",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="agentevent",
            name="seq",
            field=models.PositiveIntegerField(null=True),
        ),
        migrations.RunPython(number_events, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="agentevent",
            name="seq",
            field=models.PositiveIntegerField(),
        ),
        migrations.RemoveIndex(
            model_name="agentevent",
            name="agents_agen_agent_i_f1861c_idx",
        ),
        migrations.AlterModelOptions(
            name="agentevent",
            options={"ordering": ["agent", "seq"]},
        ),
        migrations.AddConstraint(
            model_name="agentevent",
            constraint=models.UniqueConstraint(fields=("agent", "seq"), name="event_seq_unique_per_agent"),
        ),
    ]
