"""A small Django project served by gunicorn in tests/e2e/test_django_e2e.py."""
