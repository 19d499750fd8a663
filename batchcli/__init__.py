"""batchcli: run one operation over many items, with retries, progress, resumable runs and a pause shell."""

from batchcli.configuration import Configuration
from batchcli.inject import inject
from batchcli.params import Param
from batchcli.secret import Secret
from batchcli.service import Service
from batchcli.source import Source

__version__ = "0.1.0"

__all__ = ["Configuration", "Param", "Secret", "Service", "Source", "__version__", "inject"]
