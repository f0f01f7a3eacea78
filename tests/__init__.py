"""The tests of stem_tfrs and data_prep (a package, so that they import each other as `tests.*`)."""
