"""Greedy soup: average fine-tunes one at a time, keeping each only if validation agrees.

Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time, Wortsman et al. 2022 (arXiv:2203.05482), Recipe 1: sort the
ingredients by their own validation score, start the soup with the best, and add each next
one if the uniform average with it scores at least as well on validation as without it (the
paper's ``>=``). The choice needs evaluation, so it is a driver, not a tensor kernel; the soup
it keeps is an ordinary ``linear`` merge, written by the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alloykit.errors import AlloyError


@dataclass(frozen=True)
class SoupStep:
    """One ingredient tried: the soup's validation score with it, and whether it stayed."""

    ingredient: str
    score: float
    kept: bool


@dataclass(frozen=True)
class Soup:
    """The ingredients kept, in the order added, and how the choice went."""

    kept: tuple[str, ...]
    score: float
    individual: dict[str, float]
    steps: tuple[SoupStep, ...] = field(default=())

    def recipe(self) -> dict:
        """The uniform average of the kept ingredients, as a recipe."""
        return {
            "merge_method": "linear",
            "models": [{"model": m, "parameters": {"weight": 1.0}} for m in self.kept],
        }


def greedy_selection(
    individual: dict[str, float], soup_score: Callable[[list[str]], float]
) -> Soup:
    """Recipe 1 on ingredients' own scores ``individual`` and a scorer of soups (a list of
    ingredients, averaged uniformly); ties in ``individual`` keep the given order."""
    if not individual:
        raise AlloyError("greedy soup: no ingredients", "give at least one model")
    order = sorted(individual, key=lambda name: -individual[name])
    kept = [order[0]]
    best = individual[order[0]]
    steps = [SoupStep(order[0], best, True)]
    for candidate in order[1:]:
        score = soup_score([*kept, candidate])
        keep = score >= best
        steps.append(SoupStep(candidate, score, keep))
        if keep:
            kept.append(candidate)
            best = score
    return Soup(tuple(kept), best, dict(individual), tuple(steps))


def greedy_soup(
    models: Sequence[str | Path],
    tasks: Sequence[str | Path],
    *,
    split: str = "validation",
    limit: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> Soup:
    """Choose a greedy soup of ``models`` by their mean score on ``tasks``' ``split``.

    Soups are merged in memory (:func:`alloykit.merge_to_state_dict`) and scored in one loaded
    model, so each candidate costs one merge and one evaluation.
    """
    from alloykit.api import merge_to_state_dict
    from alloykit.evaluate import evaluate, load_model, load_task

    names = [str(m) for m in models]
    loaded_tasks = [load_task(t) for t in tasks]
    model, tokenizer = load_model(names[0], device)

    def mean_score(target) -> float:
        results = evaluate(
            target,
            loaded_tasks,
            split=split,
            limit=limit,
            batch_size=batch_size,
            tokenizer=tokenizer,
        )
        return sum(r.score for r in results) / len(results)

    def soup_score(ingredients: list[str]) -> float:
        merged = merge_to_state_dict(Soup(tuple(ingredients), 0.0, {}).recipe())
        return mean_score(_loaded(model, merged))

    return greedy_selection({name: soup_score([name]) for name in names}, soup_score)


def write_soup(soup: Soup, out: str | Path, *, force: bool = False) -> Path:
    """Merge the kept ingredients with the engine into ``out``; the card records the choice."""
    from alloykit.api import merge

    written = merge(soup.recipe(), out, force=force)
    with (written / "README.md").open("a", encoding="utf-8") as card:
        card.write(card_section(soup))
    return written


def _loaded(model, state):
    """``model`` with the weights ``state`` (float32 on the model's device)."""
    device = next(model.parameters()).device
    model.load_state_dict({k: v.float().to(device) for k, v in state.items()}, strict=False)
    return model


def card_section(soup: Soup) -> str:
    """The model-card lines recording how the soup was chosen."""
    lines = ["", "## Greedy soup", "", "| ingredient | own score | soup score with it | kept |"]
    lines.append("| --- | --- | --- | --- |")
    for step in soup.steps:
        own = soup.individual[step.ingredient]
        lines.append(f"| {step.ingredient} | {own:.4f} | {step.score:.4f} | {step.kept} |")
    return "\n".join(lines) + "\n"
