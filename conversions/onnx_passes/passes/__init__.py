"""One module per graph-surgery pass; each registers itself with `@register_pass(name)`."""
