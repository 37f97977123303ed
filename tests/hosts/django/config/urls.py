from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from tools import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("ops/rubot/", include("pipeline.contrib.django.urls")),
    path("refunds/", views.launch_refund),
    path("refunds/<str:run_id>", views.refund_status),
]
