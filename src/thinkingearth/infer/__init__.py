"""Whole-scene prediction: streaming, georeferenced, with uncertainty (``thinkingearth predict``).

* :mod:`~thinkingearth.infer.model`: :class:`SceneModel`, what the predictor needs to know about
  a network (task, classes, bands, acquisitions, tile, overlap, units);
* :mod:`~thinkingearth.infer.threshold`: the training-free Otsu models for flood and water;
* :mod:`~thinkingearth.infer.predictor`: :func:`predict_scene`, the streaming predictor;
* :mod:`~thinkingearth.infer.writers`: the class map (``uint8``, colour table, class names) and
  uncertainty (``float32``, NaN no data) COGs, their QGIS styles and the PNG quicklook;
* :mod:`~thinkingearth.infer.batch`: many scenes fanned out over Dask, restartable.
"""

from thinkingearth.infer.model import SceneModel, ScenePreview
from thinkingearth.infer.predictor import PredictionResult, predict_scene
from thinkingearth.infer.threshold import threshold_model

__all__ = ["PredictionResult", "SceneModel", "ScenePreview", "predict_scene", "threshold_model"]
