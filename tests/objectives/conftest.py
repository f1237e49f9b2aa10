"""Tests of vlexp/objectives/. Modules without a test file of their own, and the tests that cover them:

- base.py: eval/metrics/test_retrieval.py, eval/test_clip_benchmark.py, objectives/concepts/test_concepts_heads.py
- clip.py: train/test_scale_units.py
- distributed.py: objectives/concepts/test_concepts.py, objectives/concepts/test_concepts_heads.py, objectives/concepts/test_concepts_lazy.py, objectives/concepts/test_concepts_mechanism.py ...
"""
