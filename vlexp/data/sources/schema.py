"""Config schemas of the data sources (checked before any data is read).

Each registered source declares its options with these pieces; file sources also take
the shared split options and ignore the synthetic generator's knobs (so an experiment
file that sets them composes with any data).
"""

from __future__ import annotations

from vlexp.registry import Opt

_FRACTION = Opt(float, lo=0.0, hi=1.0)
_PATH = Opt(str, nullable=True)
_SPEC = Opt((str, list), nullable=True)  # shard spec(s): brace range, folder, glob, list

SYNTHETIC_KNOBS = {
    "num_test_compositional": Opt(int, lo=0),
    "min_objects": Opt(int, lo=1, hi=4),
    "max_objects": Opt(int, lo=1, hi=4),
    "noisy_caption_frac": _FRACTION,
    "low_complexity_frac": _FRACTION,
    "text_in_image_frac": _FRACTION,
    "action_frac": _FRACTION,
    "random_text_frac": _FRACTION,
    "finegrained_k": Opt(int, lo=0),
    "num_test_single": Opt(int, lo=0, nullable=True),
    "train_caption": Opt(str, choices=("sampled", "detailed")),
}

SYNTHETIC_SCHEMA = {
    "seed": Opt(int),
    "num_train": Opt(int, lo=1),
    "num_val": Opt(int, lo=0),
    "num_test": Opt(int, lo=0),
    "image_size": Opt(int, lo=16, hi=1024, doc="image side in pixels, 16 to 1024"),
    **SYNTHETIC_KNOBS,
}

SPLIT_SCHEMA = {
    "class_names": Opt((str, list), nullable=True),
    "eval_name": Opt(str),
    "templates": Opt((str, list), nullable=True),
    "num_train": Opt(int, lo=1, nullable=True),
    "num_val": Opt(int, lo=1, nullable=True),
    "num_test": Opt(int, lo=1, nullable=True),
    "max_bad_fraction": _FRACTION,
    "min_samples": Opt(int, lo=0),
    "image_size": Opt(int, lo=1, nullable=True),
}

CSV_SCHEMA = {
    "path": Opt(str),
    "root": _PATH,
    "image_col": Opt(str),
    "caption_col": Opt(str),
    "tags_col": Opt(str, nullable=True),
    "label_col": Opt(str, nullable=True),
    "sep": Opt(str, nullable=True),
    "check_files": Opt(bool),
    "val_path": _PATH,
    "test_path": _PATH,
    **SPLIT_SCHEMA,
}

WEBDATASET_SCHEMA = {
    "urls": _SPEC,
    "sources": Opt(list, nullable=True),
    "weights": Opt(list, each=Opt(float, lo=0.0), nullable=True),
    "shuffle_buffer": Opt(int, lo=0),
    "shuffle_shards": Opt(bool),
    "resampled": Opt(bool),
    "samples_per_epoch": Opt(int, lo=1, nullable=True),
    "val_urls": _SPEC,
    "test_urls": _SPEC,
    "index_dir": _PATH,
    "index_workers": Opt(int, lo=0),
    "seed": Opt(int),
    **SPLIT_SCHEMA,
}

WDS_INDEXED_SCHEMA = {
    "urls": _SPEC,
    "index_path": _PATH,
    "index_dir": _PATH,
    "rebuild_index": Opt(bool),
    "index_workers": Opt(int, lo=0),
    "verify_images": Opt(bool),
    "max_open_files": Opt(int, lo=1),
    "val_urls": _SPEC,
    "test_urls": _SPEC,
    **SPLIT_SCHEMA,
}
