"""Tests of vlexp/samplers/. Modules without a test file of their own, and the tests that cover them:

- base.py: the tests of the modules that use it (no direct import)
- random.py: the tests of the modules that use it (no direct import)
- tagging.py: samplers/test_tonics_curriculum.py, samplers/test_tonics_groups.py, samplers/test_tonics_tagging.py, test_config.py ...
- tonics.py: experiments/test_experiment_tonics.py, samplers/test_tonics_groups.py, samplers/test_tonics_index.py, samplers/test_tonics_ranks.py ...
"""
