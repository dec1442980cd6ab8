"""Channels: complex baseband ``y = h x + n``, power normalisation, equalisers, pilot-based sensing.

SNR in dB is ``Es/N0`` per complex symbol; ``n ~ CN(0, N0)`` (``N0/2`` per real dimension).

Example:
    >>> from genscom.channels import create_channel, equalize
    >>> ch = create_channel("rayleigh", coherence=16)
    >>> out = ch(x, 10.0, generator=g)
    >>> x_hat, nv = equalize(out.y, out.h, out.noise_var, "zf")
"""

from genscom.channels.awgn import AWGNChannel
from genscom.channels.base import Channel, ChannelName, ChannelOutput, check_complex, complex_noise, snr_to_noise_var
from genscom.channels.fading import (
    equalize_received,
    DEFAULT_K_FACTOR,
    RayleighBlockFading,
    RicianBlockFading,
    equalize,
)
from genscom.channels.power import channel_uses, complex_to_real, normalize_power, real_to_complex
from genscom.channels.registry import CHANNELS, create_channel, list_channels
from genscom.channels.sensing import (
    ChannelSensing,
    LinkFeedback,
    PilotLayout,
    PilotReception,
    channel_prior,
    estimate_channel,
    estimate_noise_var,
    estimate_snr_db,
    feedback_uses,
    link_feedback,
    ls_estimate,
    pass_with_pilots,
    pilot_sequence,
    receive_with_pilots,
    send_with_pilots,
    sense,
)

__all__ = [
    "AWGNChannel", "CHANNELS", "Channel", "ChannelName", "ChannelOutput", "ChannelSensing", "DEFAULT_K_FACTOR",
    "LinkFeedback", "PilotLayout", "PilotReception", "RayleighBlockFading", "RicianBlockFading", "channel_prior", "channel_uses",
    "check_complex", "complex_noise", "complex_to_real", "create_channel", "equalize", "estimate_channel",
    "equalize_received", "estimate_noise_var", "estimate_snr_db", "feedback_uses", "link_feedback", "pass_with_pilots", "list_channels", "ls_estimate", "normalize_power", "pilot_sequence",
    "real_to_complex", "receive_with_pilots", "send_with_pilots", "sense", "snr_to_noise_var",
]
