"""The data stages' work: download (sources, raw layout, IDX files) and preprocess (the prepared splits)."""
