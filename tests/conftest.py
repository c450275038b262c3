import pytest

from tests.fixtures import make_params


@pytest.fixture
def default_params():
    return make_params()
