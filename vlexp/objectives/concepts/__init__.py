"""Concept distillation: the objective, its teacher targets and the teachers."""

from vlexp.objectives.concepts.objective import ConceptDistillation

__all__ = ["ConceptDistillation"]
