"""Pipeline, backends, inputs, comparison, cache and CLI of the conversion harness."""
