"""Websocket routes. Live agent events arrive with the event-log issue."""

websocket_urlpatterns: list = []
