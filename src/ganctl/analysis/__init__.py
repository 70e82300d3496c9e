"""Measurements of trained models: sample quality now, gradient-norm statistics later."""
