"""Tests of vlexp/data/. Modules without a test file of their own, and the tests that cover them:

- bad_samples.py: data/sources/test_csv.py, data/test_bad_samples_formats.py, data/test_bad_samples_ranks.py, data/test_bad_samples_workers.py ...
- eval_set.py: eval/metrics/test_retrieval.py, eval/test_finegrained.py
- paths.py: data/test_data_paths.py
- pipeline.py: data/test_augment.py, data/test_fused_transform.py, data/test_image_decoding.py, encoders/test_trunk_cache.py ...
- records.py: data/test_data_io_bad_samples.py, data/test_fused_transform.py, data/test_image_decoding.py, test_import_graph.py
- templates.py: data/test_data_paths.py
- types.py: data/sources/test_webdataset.py, data/synthetic/test_synthetic_determinism.py, data/test_data_io_csv.py, data/test_data_io_webdataset.py ...
"""
