"""Backbones, heads and the SelfPatch aggregation module."""

from selfpatch.models.aggregation import (
    ClassAttentionAggregator,
    MeanAggregator,
    build_aggregator,
)
from selfpatch.models.backbone import BackboneSpec, ViTBackbone, make_backbone_spec
from selfpatch.models.heads import DINOHead, ProjectionMLP
from selfpatch.models.loading import load_backbone

__all__ = [
    "ClassAttentionAggregator", "MeanAggregator", "build_aggregator", "BackboneSpec",
    "ViTBackbone", "make_backbone_spec", "DINOHead", "ProjectionMLP", "load_backbone",
]
