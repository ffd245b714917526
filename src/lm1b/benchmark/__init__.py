"""The model benchmark behind `python -m lm1b.bench`: candidates, timing and the report."""
