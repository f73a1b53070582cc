"""Backends that run a recipe's samples and return outputs keyed by name: one module each, registered
with `@register_backend` (see `base`), found by the registry without a list kept by hand."""
