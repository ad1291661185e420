"""The stored formats: checkpoint files (checkpoint.py) and run directories (rundir.py)."""
