"""Tests of vlexp/eval/. Modules without a test file of their own, and the tests that cover them:

- extra_sets.py: eval/test_clip_benchmark.py, eval/test_eval_datasets.py
"""
