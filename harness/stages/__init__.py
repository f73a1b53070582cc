"""The stages of a run: one module each, with its cache key beside it. The order they run in is
`harness.pipeline.STAGES`; this package imports none of them, so a stage's code key (the closure of
its module's imports, which includes this file) holds that stage's code only."""
