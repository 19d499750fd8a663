"""batchcli: run one operation over many items, with retries, progress, resumable runs and a pause shell."""

from batchcli.load.configuration import Configuration
from batchcli.load.inject import inject
from batchcli.load.params import Param
from batchcli.load.secret import Secret
from batchcli.load.service import Service
from batchcli.load.source import Source
from batchcli.load.throttled import Throttled

__version__ = "0.1.0"

__all__ = ["Configuration", "Param", "Secret", "Service", "Source", "Throttled", "__version__", "inject"]
