"""Learned channel adaptation (SNR/CSI-conditioned adapter) and scalable extraction (importance, mu, bitmap).

``ChannelAdapter`` maps an embedding to ``k`` complex symbols and back, conditioned on
channel sensing; :mod:`genscom.adaptation.extraction` selects symbol groups by importance
under a threshold ``mu`` or a channel-use budget; :func:`train_adapter` trains it through
the differentiable channels. The schemes ``adapted`` / ``adapted+mu`` live in
:mod:`genscom.schemes.adapted`.
"""

from genscom.adaptation.adapter import (AdapterConfig, AdapterOutput, ChannelAdapter, build_adapter, pilot_layout,
                                        through_channel)
from genscom.adaptation.extraction import (
    budget_mu,
    channel_uses_of,
    fill_masked,
    side_channel_uses,
    threshold_keep,
)
from genscom.adaptation.train import AdapterData, TrainAdapterConfig, fed_back_snr_db, prepare_data, train_adapter

__all__ = [
    "AdapterConfig",
    "AdapterData",
    "AdapterOutput",
    "ChannelAdapter",
    "TrainAdapterConfig",
    "budget_mu",
    "build_adapter",
    "channel_uses_of",
    "fed_back_snr_db",
    "fill_masked",
    "pilot_layout",
    "prepare_data",
    "side_channel_uses",
    "threshold_keep",
    "through_channel",
    "train_adapter",
]
