"""Cross-view models (torch only): backbones, per-frame aggregators, temporal fusion, losses.

Import submodules explicitly; importing this package does not import torch.
"""
