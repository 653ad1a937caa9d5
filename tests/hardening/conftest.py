"""The AppTest fixtures of tests/pages (a fresh app session on the sample model, a private data folder)."""

from tests.pages.conftest import app, sample_model, studio_home  # noqa: F401  (fixtures)
