"""Markdown templates (Jinja2) for the dataset card and, later, predictor cards."""
