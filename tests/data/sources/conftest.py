"""Tests of vlexp/data/sources/. Modules without a test file of their own, and the tests that cover them:

- base.py: the tests of the modules that use it (no direct import)
- common.py: cli/test_evaluate.py
- schema.py: the tests of the modules that use it (no direct import)
- synthetic.py: data/synthetic/test_synthetic_single.py, data/synthetic/test_synthetic_train_caption.py, eval/test_finegrained_synthetic.py, samplers/test_tonics_groups.py
- wds_indexed.py: cli/test_evaluate.py
"""
