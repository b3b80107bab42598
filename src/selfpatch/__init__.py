"""selfpatch: DINO + SelfPatch pre-training for Vision Transformers, and dense evaluation.

Library pieces for your own training loop::

    from selfpatch.methods import (neighbour_table, match_positives, gather_positives,
                                   SelfPatchTargets, DINOLoss, PatchDistillationLoss)
    from selfpatch.models import ClassAttentionAggregator, DINOHead, ViTBackbone
"""

__version__ = "0.1.0"
