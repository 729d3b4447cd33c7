"""Markdown templates (Jinja2) for the dataset card, and the predictor cards in src/forelen/predictors/."""
