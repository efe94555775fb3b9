"""Prefect flows that run curate pipelines (installed as `curate.flows`)."""
