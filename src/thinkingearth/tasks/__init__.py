"""Downstream tasks: metrics now; classification, segmentation, change detection and regression
LightningModules are planned (see DESIGN.md)."""

from __future__ import annotations
