"""A small PostgreSQL job queue (see service.py for why not pgqueuer)."""
