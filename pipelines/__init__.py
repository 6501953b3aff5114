"""Prefect flows and deployments, and the `python -m pipelines` operations CLI."""
