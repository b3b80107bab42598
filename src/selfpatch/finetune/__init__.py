"""Downstream fine-tuning of pre-trained backbones (issue 13): Semantic FPN segmentation."""
