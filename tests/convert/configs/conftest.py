"""The ``.py`` files under this folder are mmcv-style configs read by detlight's safe reader, never imported."""

collect_ignore_glob = ["*.py", "*/*.py"]
