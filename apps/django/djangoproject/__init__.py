"""A minimal Django project (no database, no contrib apps) implementing the app contract."""
