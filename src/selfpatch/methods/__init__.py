"""SelfPatch, DINO, MoCo-v3 and MoBY building blocks (neighbours, matching, targets, losses)."""

from selfpatch.methods.dino import DINOObjective
from selfpatch.methods.losses import (
    CenteredDistillationLoss,
    DINOLoss,
    PatchDistillationLoss,
    moco_contrastive_loss,
    queue_contrastive_loss,
    sharpened_cross_entropy,
)
from selfpatch.methods.matching import gather_positives, match_positives
from selfpatch.methods.moby import MoBYObjective
from selfpatch.methods.moco import MoCoV3Objective
from selfpatch.methods.neighbours import NeighbourTable, build_neighbour_table, neighbour_table
from selfpatch.methods.objective import ImageObjective
from selfpatch.methods.selfpatch import SelfPatchObjective, SelfPatchTargets
from selfpatch.methods.teacher_student import TeacherStudent

__all__ = [
    "ImageObjective", "DINOObjective", "MoCoV3Objective", "MoBYObjective", "moco_contrastive_loss",
    "queue_contrastive_loss",
    "CenteredDistillationLoss", "DINOLoss",
    "PatchDistillationLoss", "sharpened_cross_entropy", "gather_positives", "match_positives",
    "NeighbourTable", "build_neighbour_table", "neighbour_table", "SelfPatchTargets",
    "SelfPatchObjective", "TeacherStudent",
]
