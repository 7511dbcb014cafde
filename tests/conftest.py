"""Suite-wide fixtures."""

import logging

import pytest


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """CLI entry points called in-process install root log handlers on the (captured) stderr of the
    test that called them; restore the root logger so later tests do not log into a closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
