"""Evaluation of the recipe's acceptance checks (declared in `models.checks`): one module per kind,
registered with `@register_check` under the declaration's tag (see `base`), found by the registry
without a list kept by hand."""
