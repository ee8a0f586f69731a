"""Registers the suite's plugin (:mod:`icl_verify.properties.plugin`) when pytest collects the
suite, unless ``-p icl_verify.properties.plugin`` already did."""
from icl_verify.properties import plugin


def pytest_addoption(parser, pluginmanager):
    if not pluginmanager.is_registered(plugin):
        pluginmanager.register(plugin, "icl_verify.properties.plugin")
