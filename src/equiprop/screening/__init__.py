"""Streaming, resumable two-stage screening (``equiprop screen``): inputs, selection, work folder, pipeline."""
