"""Tests of vlexp/filters/cat/. Modules without a test file of their own, and the tests that cover them:

- examples.py: filters/cat/test_labelled.py
"""
