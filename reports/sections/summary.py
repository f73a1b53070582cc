"""The head of the report: the recipe, the runners and where they ran, and the environment."""

from __future__ import annotations

import datetime

from trt_harness.models.results.recipe import RecipeRecord
from trt_harness.models.results.stages import RunnerRecord
from trt_harness.reports import formatting as fmt
from trt_harness.reports.sections.common import Fact, RunView, tolerance_text


class SummarySection:
    def __init__(self, run: RunView) -> None:
        self.run = run
        self.results = run.results

    @property
    def created(self) -> str:
        stamp = datetime.datetime.fromtimestamp(self.results.created_unix, datetime.UTC)
        return stamp.strftime("%Y-%m-%d %H:%M UTC")

    @property
    def samples(self) -> int | None:
        executed = [r.samples for r in self.run.runners.values() if r.executed]
        return max(executed) if executed else None

    @property
    def recipe_facts(self) -> list[Fact]:
        recipe = self.results.recipe
        facts = []
        if recipe.params:
            facts.append(Fact("parameters", ", ".join(f"{k}={v}" for k, v in recipe.params.items()), True))
        inputs = [f"{i.name} {list(i.shape)} {i.dtype}" for i in recipe.inputs]
        facts.append(Fact("inputs", "; ".join(inputs) or fmt.MISSING, True))
        facts.append(Fact("outputs", ", ".join(recipe.output_names) or fmt.MISSING, True))
        facts.append(Fact("default tolerance", tolerance_text(recipe.default_tolerance)))
        for output, tolerance in recipe.tolerances.items():
            facts.append(Fact(f"tolerance of {output}", tolerance_text(tolerance)))
        if self.results.overrides.given:
            facts.append(Fact("command-line overrides", "; ".join(self.results.overrides.given), True))
        facts.append(Fact("weights", weights_text(recipe), True))
        return facts

    @property
    def backends(self) -> list[RunnerRecord]:
        return list(self.run.runners.values())

    @property
    def environment_facts(self) -> list[Fact]:
        env = self.results.environment
        gpus = "; ".join(f"{g.name} (sm {g.compute_capability})" for g in env.gpus) or "none"
        facts = [
            Fact("python", env.python),
            Fact("platform", env.platform, True),
            Fact("CPUs", fmt.number(env.processor_count)),
            Fact("GPUs", gpus),
        ]
        facts += [Fact(name, version, True) for name, version in env.packages.items()]
        facts += [
            Fact(f"{name} (the recipe's)", version, True) for name, version in env.recipe_packages.items()
        ]
        return facts


def weights_text(recipe: RecipeRecord) -> str:
    """Where the run's weights came from, exactly as its results say."""
    if recipe.weights_source is not None:
        return recipe.weights_source.text
    # results written before runs recorded the source: only the file, if one was given, is known
    return f"--weights {recipe.weights}" if recipe.weights else "the recipe's own (source not recorded)"
