"""mloop: close the machine-learning loop in production.

Train → track → register → deploy → serve → monitor → retrain → roll out, automated end to end, from
one ``pip install``. The public surface is small; each capability is a subpackage (see DESIGN.md).
"""

from mloop.config import Settings, load_settings
from mloop.errors import MloopError

__version__ = "0.1.0"

__all__ = ["MloopError", "Settings", "__version__", "load_settings"]
