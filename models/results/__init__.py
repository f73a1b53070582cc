"""The results contract: every value `results.json` holds, typed, and the one reader and writer.

The pipeline, `harness compare`, the HTML report, JUnit and the index all use these types; nothing
re-reads the JSON by hand.
"""
