"""Tests of vlexp/data/synthetic/. Modules without a test file of their own, and the tests that cover them:

- captions.py: the tests of the modules that use it (no direct import)
- dataset.py: cli/test_evaluate.py, experiments/test_experiment_tonics.py
- ontology.py: data/synthetic/test_synthetic_knobs.py, data/synthetic/test_synthetic_train_caption.py, data/test_tags.py
- render.py: data/synthetic/test_synthetic_pixels.py, data/synthetic/test_synthetic_single.py
- scene.py: data/synthetic/test_synthetic_train_caption.py
"""
