"""SelfPatch and DINO building blocks (neighbours, matching, targets, losses, objectives)."""

from selfpatch.methods.dino import IMAGE_OBJECTIVES, DINOObjective
from selfpatch.methods.losses import (
    CenteredDistillationLoss,
    DINOLoss,
    PatchDistillationLoss,
    sharpened_cross_entropy,
)
from selfpatch.methods.matching import gather_positives, match_positives
from selfpatch.methods.neighbours import NeighbourTable, build_neighbour_table, neighbour_table
from selfpatch.methods.selfpatch import SelfPatchObjective, SelfPatchTargets
from selfpatch.methods.teacher_student import TeacherStudent

__all__ = [
    "IMAGE_OBJECTIVES", "DINOObjective", "CenteredDistillationLoss", "DINOLoss",
    "PatchDistillationLoss", "sharpened_cross_entropy", "gather_positives", "match_positives",
    "NeighbourTable", "build_neighbour_table", "neighbour_table", "SelfPatchTargets",
    "SelfPatchObjective", "TeacherStudent",
]
