from django.urls import path

from teams import views

app_name = "teams"

urlpatterns = [
    path("", views.tokens, name="tokens"),
    path("<int:token_id>/revoke/", views.token_revoke, name="revoke"),
]
