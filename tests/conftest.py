"""Shared test configuration: ``pytester`` runs whole pytest sessions of the audit plugin."""

pytest_plugins = ["pytester"]
