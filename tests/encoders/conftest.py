"""Tests of vlexp/encoders/. Modules without a test file of their own, and the tests that cover them:

- base.py: train/test_accumulation.py, train/test_scale_units.py
- hf_export.py: the tests of the modules that use it (no direct import)
- image_towers.py: encoders/test_freezing.py, test_notices.py
- open_clip_export.py: the tests of the modules that use it (no direct import)
- open_clip_tower.py: cli/test_export_model.py, encoders/test_locking.py, encoders/test_open_clip.py, encoders/test_patch_dropout.py ...
- pretrained.py: the tests of the modules that use it (no direct import)
- text_towers.py: encoders/test_freezing.py, encoders/test_hf_timm.py, test_notices.py, test_safe_loading.py
- tiny.py: the tests of the modules that use it (no direct import)
- tokenizers.py: encoders/test_hf_timm.py, encoders/test_pretrained_small.py
- tower_splits.py: the tests of the modules that use it (no direct import)
"""
