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
