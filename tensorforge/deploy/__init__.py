"""Getting compiled models out of the process that compiled them: C packages (export.py), saved models
(container.py, saved.py), the compile cache."""
