"""Prefect flows and the ``xai`` command line. Prefect is imported lazily (after :mod:`flows.prefect_env`)."""
