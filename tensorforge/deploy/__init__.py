"""Deployment: compiled models exported as C packages (export.py), saved and loaded, cached."""
