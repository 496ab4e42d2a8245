from django.urls import path

from workflows import views

app_name = "workflows"

urlpatterns = [
    path("", views.workflow_list, name="list"),
    path("<int:workflow_id>/", views.workflow_detail, name="detail"),
    path("<int:workflow_id>/<slug:action>/", views.workflow_control, name="control"),
]
