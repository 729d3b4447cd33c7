"""Pipelines that chain forelen's commands into a whole product: the reference release."""
