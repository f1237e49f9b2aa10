"""Tests of vlexp/filters/. Modules without a test file of their own, and the tests that cover them:

- base.py: filters/filter_pass/test_filter_pass_orphans.py
- none.py: the tests of the modules that use it (no direct import)
"""
