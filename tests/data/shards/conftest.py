"""Tests of vlexp/data/shards/. Modules without a test file of their own, and the tests that cover them:

- export.py: cli/test_evaluate.py, data/shards/test_open_clip_train_shards.py, data/sources/test_csv.py, data/sources/test_webdataset.py ...
- index.py: cli/test_evaluate.py, data/test_bad_samples_formats.py, data/test_data_io_webdataset.py, data/test_image_decoding.py ...
- listing.py: data/test_data_io_shards.py
- samples.py: the tests of the modules that use it (no direct import)
- tario.py: data/test_data_io_shards.py, filters/filter_pass/test_filter_pass.py
"""
