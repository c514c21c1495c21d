"""The Django demo app's WSGI entry point: the project in djangoproject/, exposed as `app`.

Run it from this folder: `brick djangoapp:app` or `gunicorn djangoapp:app`. Mounted under a
prefix, the server puts the prefix in SCRIPT_NAME and `reverse()` carries it.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproject.settings")

app = get_wsgi_application()
