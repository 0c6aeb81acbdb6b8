"""Getting compiled models out of the process that compiled them: saved models, the compile cache."""
