import pytest

import wspatterns


@pytest.fixture(autouse=True)
async def _stop_everything_after_each_test():
    yield
    await wspatterns.stop_all()
