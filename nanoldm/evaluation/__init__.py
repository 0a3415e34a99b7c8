"""Measuring generated images: the shapes-world judge (``shapes_judge.py``), no learned model involved."""
from nanoldm.evaluation.shapes_judge import ObjectReading, judge, relation_holds, score

__all__ = ["ObjectReading", "judge", "relation_holds", "score"]
