"""Training data: the procedural shapes world (``shapes.py``, words and captions in ``vocabulary.py``) and its
export as an ordinary captioned image folder (``export.py``), and any such folder read back (``folder.py``)."""
from nanoldm.data.export import export_shapes
from nanoldm.data.folder import ImageFolder, collate
from nanoldm.data.shapes import ShapeObject, ShapeSample, ShapesWorld, Split
from nanoldm.data.vocabulary import (BASE_SHAPES, COLOURS, EXTRA_SHAPES, NO_CLASS, NUM_CLASSES, POSITIONS, RELATIONS,
                                     SHAPES, SIZES, Prompt, caption_for, class_id, class_name, parse_caption,
                                     parse_combinations)

__all__ = [
    "BASE_SHAPES", "COLOURS", "EXTRA_SHAPES", "ImageFolder", "collate", "NO_CLASS", "NUM_CLASSES", "POSITIONS", "Prompt", "RELATIONS", "SHAPES",
    "SIZES", "ShapeObject", "ShapeSample", "ShapesWorld", "Split", "caption_for", "class_id", "class_name",
    "export_shapes", "parse_caption", "parse_combinations",
]
