"""``path("rubot/", include("pipeline.contrib.django.urls"))``: Rubot's pages under that prefix."""

from __future__ import annotations

from django.urls import re_path

from pipeline.contrib.django import views

app_name = "rubot"
urlpatterns = [re_path(r"^(?P<path>.*)$", views.pages, name="pages")]
