"""Test-wide settings."""

import os

# Before torch loads OpenMP (as the CLI does): idle threads sleep instead of spinning, which on
# a 2-core machine shared with DataLoader workers and subprocesses avoids 10x slowdowns.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


import pytest  # noqa: E402 - after the environment variable above


@pytest.fixture
def one_thread():
    """One torch thread: deterministic and quick on a shared 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """16 small generated images with coloured blobs (see test_train.make_images)."""
    from test_train import make_images

    return make_images(tmp_path_factory.mktemp("data") / "imgs", n=16)
