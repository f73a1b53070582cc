"""ONNX graph-surgery passes built on onnx-graphsurgeon, and the driver that proves they change no output.

A pass is one module in `passes/` registering one function with `@register_pass(name)` (`registry`);
it edits a `gs.Graph` in place and returns `PassOutcome(modified, changes)`. `driver.run_passes`
applies a list of them to a file and reports what each did.

This file imports nothing: a module that needs only the graph helpers (`graph_edit`) does not take
the driver and every pass into its code key (see `harness.code_keys`).
"""
