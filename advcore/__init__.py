"""advcore: attacks, adversarial training and experiments for the IE643 adversarial-examples book.

Modules, one idea each: ``attacks`` (FGSM, uniform noise, PGD), ``evaluate`` (error and
confidence under attack, epsilon sweeps, transfer), ``landscape`` (many-restart PGD),
``models``, ``train`` (one loop, pluggable objectives), ``zoo`` (trained models, cached),
``data`` and ``imagenet`` (offline-first datasets), ``profiles`` (experiment sizes),
``results`` (provenance), ``plots`` and ``exercises``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("advcore")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
