"""Suite-wide test settings: one intra-op thread (tiny models spin-wait badly with more on a shared
2-core CPU, and Sionna's LDPC decoder runs several times faster this way), restored afterwards."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_regen_decoder():
    """``make(folder) -> str | None``: save a tiny random image decoder for the ``tiny`` profile (16-d
    embeddings, 16x16 frames, 2 DDIM steps) into ``folder`` and return it; ``None`` without diffusers.
    Shared by the demo tests (browser and two-process)."""

    def make(folder) -> str | None:
        try:
            from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig
        except ImportError:
            return None
        torch.manual_seed(0)
        DiffusionDecoder(DiffusionDecoderConfig(image_size=16, cond_dim=16, block_out_channels=(8, 16),
                                                cross_attention_dim=8, attention_head_dim=4, sample_steps=2,
                                                extra={"profile": "tiny"})).save_pretrained(folder)
        return str(folder)

    return make
