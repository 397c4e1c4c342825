"""thinkingearth: Copernicus Earth-observation foundation models.

One encoder for any Sentinel sensor, the self-supervised recipes that pretrain it, the tasks and
benchmarks that measure it, and a streaming predictor that maps whole scenes. See DESIGN.md for
the map of the toolkit and the contracts between its parts.
"""

from thinkingearth.errors import UserInputError
from thinkingearth.sensors import SENSORS, get_bands, get_sensor

__all__ = ["SENSORS", "UserInputError", "__version__", "get_bands", "get_sensor"]
__version__ = "0.1.0"
