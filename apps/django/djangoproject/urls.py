"""The URLconf: one path per route of the app contract."""

from django.urls import path

from . import views

urlpatterns = [
    path("hello", views.hello, name="hello"),
    path("healthz", views.healthz, name="healthz"),
    path("echo", views.echo, name="echo"),
    path("environ", views.environ, name="environ"),
    path("stream", views.stream, name="stream"),
    path("sleep", views.sleep, name="sleep"),
    path("file", views.file, name="file"),
    path("url", views.url, name="url"),
]

handler400 = views.bad_request
