"""Rendering of saved results (HTML, JSON, JUnit). Imports no torch and no TensorRT."""
