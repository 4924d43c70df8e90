"""The core of sfn-pauser: everything app.py wires together."""
