"""Builders: prompt sources, split recipes, generation engines and the feature recorder."""
