"""The parses kept on disk for code keys never hide an edit: they are keyed by each file's bytes."""

from __future__ import annotations

import json

from trt_harness.harness import code_keys


def test_kept_parses_follow_edits_and_survive_damage(tmp_path, monkeypatch):
    monkeypatch.setattr(code_keys, "_on_disk", {})
    store = tmp_path / "parses.json"
    module = tmp_path / "mod.py"
    module.write_text("import trt_harness.models.core.errors\n")
    code_keys.keep_parses_in(store)
    assert code_keys._parse_cached_fresh(module)[0] == ("trt_harness.models.core.errors",)
    code_keys.save_parses()
    assert len(json.loads(store.read_text())) == 1

    module.write_text("import trt_harness.models.core.errors\nfrom trt_harness.models.core import registry\n")
    assert "trt_harness.models.core.registry" in code_keys._parse_cached_fresh(module)[0]

    store.write_text("{not json")
    monkeypatch.setattr(code_keys, "_on_disk", {})
    code_keys.keep_parses_in(store)  # a damaged file is ignored, never trusted
    assert "trt_harness.models.core.registry" in code_keys._parse_cached_fresh(module)[0]
