"""Tests of vlexp/eval/metrics/. Modules without a test file of their own, and the tests that cover them:

- finegrained.py: eval/test_finegrained.py
- zeroshot.py: eval/test_clip_benchmark.py, eval/test_fewshot.py, eval/test_retrieval_metrics.py
"""
