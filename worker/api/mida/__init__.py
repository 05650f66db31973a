"""Mida's public API v2, read side: routes, response models, parameters and shapes."""
