"""Tests of vlexp/train/viz/. Modules without a test file of their own, and the tests that cover them:

- callback.py: the tests of the modules that use it (no direct import)
- plots.py: the tests of the modules that use it (no direct import)
"""
