"""Settings for the Django demo app: no database, no contrib apps, configured from the environment.

DJANGO_SECRET_KEY  the secret key; without it a fixed development key is used, with a warning.
DJANGO_ALLOWED_HOSTS  comma-separated host names the app answers for
                      (default: localhost, 127.0.0.1, [::1]).
"""

import os
import warnings

DEBUG = False

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    SECRET_KEY = "django-insecure-brick-development-key-not-for-production"
    warnings.warn(
        "DJANGO_SECRET_KEY is not set: using the insecure development key", RuntimeWarning, 1
    )

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if host.strip()
]

# Nothing here needs a database, sessions or templates.
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
# CommonMiddleware checks the Host header against ALLOWED_HOSTS on every request and sets
# Content-Length on responses that are not streamed.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "djangoproject.urls"
USE_TZ = True

# The largest body /echo reads into memory (the same bound as the other apps).
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# With DEBUG off Django logs nothing to the console; send errors (5xx, a disallowed Host)
# to stderr, where the server's error log is. 4xx answers are in the server's access log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {"django.request": {"level": "ERROR"}},
}
