"""Instrumentation: runs, epochs, steps and the metric hot path."""
