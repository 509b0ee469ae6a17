"""Evaluate models: generation exact match, multiple-choice log-likelihood, perplexity."""

from __future__ import annotations

from alloykit.evaluate.generation import exact_match, generate_answers

__all__ = ["exact_match", "generate_answers"]
