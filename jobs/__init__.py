"""Batch moderation of recorded files: the job store (Redis), the Celery worker and its pipeline.

The HTTP API lives in the edge (``edge/routers/jobs.py``); workers run ``python -m jobs.worker``.
"""
