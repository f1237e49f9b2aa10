"""Tests of vlexp/objectives/concepts/. Modules without a test file of their own, and the tests that cover them:

- heads.py: objectives/concepts/test_concepts_heads.py
- objective.py: objectives/concepts/test_concepts.py, objectives/concepts/test_concepts_mechanism.py, objectives/test_composite.py
- targets.py: objectives/concepts/test_concepts.py, objectives/concepts/test_concepts_lazy.py
- teachers.py: objectives/concepts/test_concepts.py, objectives/concepts/test_concepts_e2e.py, objectives/concepts/test_concepts_heads.py, objectives/concepts/test_concepts_lazy.py ...
"""
