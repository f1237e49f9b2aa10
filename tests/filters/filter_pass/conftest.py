"""Tests of vlexp/filters/filter_pass/. Modules without a test file of their own, and the tests that cover them:

- judge.py: the tests of the modules that use it (no direct import)
- manifest.py: the tests of the modules that use it (no direct import)
- merge.py: the tests of the modules that use it (no direct import)
- options.py: filters/filter_pass/test_filter_pass_units.py
- report.py: filters/filter_pass/test_filter_pass_units.py
- runner.py: the tests of the modules that use it (no direct import)
- shard_unit.py: filters/filter_pass/test_filter_pass.py
- table_unit.py: the tests of the modules that use it (no direct import)
- units.py: filters/filter_pass/test_filter_pass_units.py
"""
