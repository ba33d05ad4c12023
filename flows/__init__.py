"""Prefect flows that wrap ``qff_core`` (reference data, training, evaluation, MD, pipeline).

Flows only orchestrate: tasks, retries, caching, task runners, artifacts, schedules. All the
work is done by plain functions of ``qff_core``, which never imports this package.
"""
