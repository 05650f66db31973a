"""Demo traffic: two experiments (a real effect and an A/A) and a live event generator."""
