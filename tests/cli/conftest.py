"""Tests of vlexp/cli/. Modules without a test file of their own, and the tests that cover them:

- clip_benchmark.py: cli/test_doc_commands.py, cli/test_evaluate.py, eval/test_clip_benchmark.py, test_safe_loading.py
- export.py: cli/test_cli.py, cli/test_sources_export_cli.py
- fewshot.py: eval/test_fewshot.py, test_safe_loading.py
- filter.py: data/sources/test_webdataset.py, filters/filter_pass/test_filter_pass_slurm.py, filters/filter_pass/test_filter_pass_units.py
- main.py: cli/test_cli.py, cli/test_doc_commands.py, cli/test_evaluate.py, cli/test_export_model.py ...
- tag.py: samplers/test_tonics_tagging.py
- teacher.py: cli/test_cli.py
- train.py: cli/test_cli.py, test_config_validation.py
"""
