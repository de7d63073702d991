
import pytest

import wspatterns

from .utils import kernel_manager


@pytest.fixture(autouse=True)
async def _stop_everything_after_each_test():
    yield
    await wspatterns.stop_all()


@pytest.fixture
def kernel(tmp_path):
    manager = kernel_manager(tmp_path)
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)
