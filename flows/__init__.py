"""Prefect flows that wrap ``qff_core``: ``reference-data``, ``train-model``, ``evaluate-model``, ``pipeline``.

Flows only orchestrate: tasks, retries, task runners, artifacts. All the work is done by plain
functions of ``qff_core`` (the same ones ``--no-prefect`` calls), which never imports this package.
"""
