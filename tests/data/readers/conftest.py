"""Tests of vlexp/data/readers/. Modules without a test file of their own, and the tests that cover them:

- csv_reader.py: data/test_bad_samples_formats.py, data/test_data_io_csv.py, filters/filter_pass/test_filter_pass.py
- memory.py: data/shards/test_open_clip_train_shards.py, data/test_bad_samples_formats.py, data/test_bad_samples_workers.py, data/test_data_io_csv.py ...
- webdataset_reader.py: data/sources/test_webdataset.py, data/test_bad_samples_formats.py, data/test_data_io_webdataset.py, filters/filter_pass/test_filter_pass.py
"""
