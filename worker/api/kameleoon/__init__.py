"""Kameleoon's Automation API results flow: data codes, shared tokens, ``variationData``."""
