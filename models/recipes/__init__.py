"""One module per recipe; each registers itself with `@register_recipe`. See `models.recipe`."""
