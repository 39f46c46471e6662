"""Alembic migrations; ``ofedrepo db upgrade`` applies them (``ofedrepo.db.upgrade``)."""
