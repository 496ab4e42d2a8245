from django.urls import path

from agents import views

app_name = "dashboard"

urlpatterns = [
    path("", views.agent_list, name="agents"),
    path("agents/<int:agent_id>/", views.agent_detail, name="agent"),
]
