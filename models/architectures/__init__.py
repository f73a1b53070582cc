"""Plain-torch architectures used by the recipes."""
