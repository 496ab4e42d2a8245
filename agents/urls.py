from django.urls import path

from agents import views

app_name = "dashboard"

urlpatterns = [
    path("", views.agent_list, name="agents"),
    path("agents/new/", views.agent_new, name="agent_new"),
    path("agents/<int:agent_id>/", views.agent_detail, name="agent"),
    path("agents/<int:agent_id>/control/<slug:action>/", views.agent_control, name="agent_control"),
    path("agents/<int:agent_id>/message/", views.agent_message, name="agent_message"),
    path("agents/<int:agent_id>/budget/", views.agent_budget, name="agent_budget"),
    path("merges/<int:merge_id>/<slug:action>/", views.merge_action, name="merge_action"),
    path("approvals/", views.approvals_inbox, name="approvals"),
    path("approvals/<int:approval_id>/<slug:action>/", views.approval_action, name="approval_action"),
    path("projects/<int:project_id>/", views.project_detail, name="project"),
]
